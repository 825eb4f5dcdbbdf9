"""SAM2 on its own machine: a coordinator and two daemons on loopback, nodes placed by machine id, as a
user puts the camera on the robot and SAM2 on a GPU box (examples/distributed.yml)."""

from __future__ import annotations

import subprocess

import pytest

from support.dataflows import (BIN, camera, collector, detector, dora_env, flow, free_port, on, sam2, wait_for,
                               wait_for_port)

pytestmark = pytest.mark.dataflow


@pytest.fixture
def cluster(tmp_path, model_dir):
    """One coordinator and daemons `robot` and `gpu`, all on 127.0.0.1; yields the coordinator port.

    Only the `gpu` daemon's environment names the model, as on a real GPU box: nodes inherit their
    daemon's environment, so SAM2 can only start where dora placed it."""
    env = dora_env()
    env.pop("MODEL", None)
    port, zenoh = free_port(), free_port()
    logs, processes = [], []

    def start(name, *args, extra_env=None):
        log = open(tmp_path / f"{name}.log", "w")
        logs.append(log)
        processes.append(subprocess.Popen([str(BIN / "dora"), *args], cwd=tmp_path, env={**env, **(extra_env or {})},
                                          stdout=log, stderr=subprocess.STDOUT))

    start("coordinator", "coordinator", "--interface", "127.0.0.1", "--port", str(port))
    wait_for_port(port)
    for machine, machine_env in (("robot", {}), ("gpu", {"MODEL": str(model_dir)})):
        start(f"daemon-{machine}", "daemon", "--machine-id", machine, "--coordinator-addr", "127.0.0.1",
              "--coordinator-port", str(port), "--local-listen-port", str(free_port()),
              "--zenoh-peer", f"tcp/127.0.0.1:{zenoh}", extra_env=machine_env)
    wait_for(lambda: registered(port, env) >= {"robot", "gpu"}, 120, "both daemons registered")
    try:
        yield port, env
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()


def registered(port: int, env: dict) -> set[str]:
    """The machine ids of the daemons the coordinator knows (`dora cluster status` lists them as ID-uuid)."""
    status = subprocess.run([str(BIN / "dora"), "cluster", "status", "--coordinator-addr", "127.0.0.1",
                             "--coordinator-port", str(port)], env=env, capture_output=True, text=True, timeout=60)
    return {line.split("-", 1)[0] for line in status.stdout.splitlines()[1:] if "-" in line}


def test_sam2_on_a_second_daemon_answers_the_first(cluster, tmp_path):
    port, env = cluster
    out = tmp_path / "out"
    dataflow = tmp_path / "distributed.yml"
    inputs = {"image": {"source": "camera/image", "queue_size": 100}, "bbox": {"source": "yolo/bbox", "queue_size": 100}}
    dataflow.write_text(flow(
        on("robot", camera(6, fps=3)), on("robot", detector()),
        # MODEL comes from the gpu daemon's environment; every prompt answered, whatever the machine's pace
        on("gpu", sam2(None, inputs, env={"EVERY_FRAME": "1"}, stats=None)),
        on("robot", collector({"mask": "sam2/mask"}, out=out))))
    result = subprocess.run([str(BIN / "dora"), "start", str(dataflow), "--coordinator-addr", "127.0.0.1",
                             "--coordinator-port", str(port), "--attach"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    logs = result.stdout + result.stderr + "".join(p.read_text() for p in tmp_path.glob("daemon-*.log"))
    assert result.returncode == 0, logs[-4000:]
    events = (out / "events.jsonl").read_text().splitlines() if (out / "events.jsonl").exists() else []
    # 6 frames, each prompt answered (dora may stop the detector before it answers the last frame)
    assert len(events) in (5, 6) and all('"width": 640' in e for e in events), logs[-4000:]
