"""Two nodes on one machine: launch/multi_node.sh started twice, as on two hosts, meets in one
c10d rendezvous on 127.0.0.1 (NPROC=1: one process per node, gloo on the CPU, DALI on CPU
operators). Each node's worker has LOCAL_RANK 0 and the ranks are 0 and 1, so whatever confuses
the local rank with the global rank shows up here and not in the single-node tests.

- one training run: one world of 2, one run directory, validation counting every image once;
- tests/multinode_probe.py under the same two agents: which images each rank read in a training
  epoch and in validation, and what the same workers would read if sharded by the local rank;
- losing a node mid-training: the job ends (MAX_RESTARTS=0), or with the default MAX_RESTARTS
  it restarts from the last checkpoint when the node comes back (or when only a worker died) and
  ends after RDZV_JOIN_TIMEOUT when it does not.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import BIN, REPO

pytestmark = pytest.mark.slow

Colour = tuple[int, int, int]
# 10 classes of solid-colour images, each image a colour of its own. 240 training images: two
# shards of 120, 15 batches of 8 per rank and nothing left over, so one epoch reads all of them.
# 69 validation images (7 a class, one removed): shards of 34 and 35, so a rank that read the
# other's shard, or the same half twice, changes the count.
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 24, 7
VAL_IMAGES = CLASSES * VAL_PER_CLASS - 1
RUN_ID = "two-nodes"


def colour_of(index: int) -> Colour:
    """Image ``index``'s colour: 3 bits a channel, 32 levels apart (JPEG moves a solid colour by
    a level or two)."""
    return tuple(16 + 32 * (index >> shift & 7) for shift in (0, 3, 6))


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[Colour, int]]]:
    """An ImageNet-layout folder of solid-colour JPEGs and, per split, each image's colour and label."""
    root = tmp_path_factory.mktemp("data") / "colours"
    images: dict[str, dict[Colour, int]] = {"train": {}, "val": {}}
    index = 0
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for label in range(CLASSES):
            folder = root / split / f"class{label:02d}"
            folder.mkdir(parents=True)
            for k in range(per_class):
                if split == "val" and label == CLASSES - 1 and k == per_class - 1:
                    continue  # 69 validation images: uneven shards
                colour = colour_of(index)
                Image.new("RGB", (32, 32), colour).save(folder / f"{k:03d}.JPEG", quality=95)
                images[split][colour] = label
                index += 1
    assert len(images["train"]) == CLASSES * TRAIN_PER_CLASS and len(images["val"]) == VAL_IMAGES
    return root, images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_overrides(data: Path, *extra: str) -> list[str]:
    return [
        f"data.root={data}",
        "data.loader=dali",
        "data.batch_size=16",  # 8 per rank
        "model.name=test_resnet",
        "logger.mode=disabled",
        "logger.progress_bar=false",
        *extra,
    ]


class TwoNodes:
    """Two runs of launch/multi_node.sh with the same settings, as two hosts would start them.
    With ``stagger``, the second starts once the first serves the rendezvous store, so that node
    0 is the MASTER_ADDR node (else either may host it: both are 127.0.0.1). Their output goes to
    files, so that neither blocks on a full pipe."""

    def __init__(self, work: Path, overrides: list[str], env: dict[str, str], *, stagger: bool = False) -> None:
        self.work = work
        self.port = free_port()
        self.env = {
            **os.environ,
            "VENV": str(BIN.parent),
            "CLR_DIST_RUNS_DIR": str(work / "runs"),
            "NNODES": "2",
            "NPROC": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(self.port),
            "RUN_ID": RUN_ID,
            "PYTHONPATH": str(REPO),  # for MODULE=tests.multinode_probe; the agents run in `work`
            **env,
        }
        self.env.pop("CLR_DIST_RUN_ID", None)  # the run directory must come from the rendezvous id
        self.overrides = overrides
        self.launches: list[subprocess.Popen] = []
        self.start()
        if stagger:
            self.wait_for_store()
        self.start()

    def start(self) -> subprocess.Popen:
        node = len(self.launches)
        with (self.work / f"node{node}.out").open("w") as out, (self.work / f"node{node}.err").open("w") as err:
            agent = subprocess.Popen(
                ["bash", str(REPO / "launch" / "multi_node.sh"), *self.overrides],
                cwd=self.work,
                # Which launch a worker descends from, for the probe to report.
                env={**self.env, "MULTINODE_TEST_NODE": str(node)},
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.launches.append(agent)
        return agent

    def wait_for_store(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.launches[0].poll() is None, f"the first agent ended: {self.stderr(0)[-3000:]}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, f"no rendezvous store on port {self.port} after {timeout} s"
                time.sleep(0.05)

    def stderr(self, node: int) -> str:
        return (self.work / f"node{node}.err").read_text()

    def finish(self, timeout: float = 300) -> list[int]:
        """Both launches' exit codes; kills whatever is left after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        try:
            return [launch.wait(timeout=max(0.0, deadline - time.monotonic())) for launch in self.launches]
        finally:
            self.kill_all()

    def kill_node(self, node: int) -> None:
        """SIGKILL everything node ``node`` runs, as when the machine dies: the launch script,
        torchrun's agent and its workers (each worker is in a session of its own, so it would
        outlive its agent)."""
        launch = self.launches[node]
        for pid in [*descendants(launch.pid), launch.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        launch.wait()

    def kill_all(self) -> None:
        for node, launch in enumerate(self.launches):
            if launch.poll() is None:
                self.kill_node(node)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), read from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


# --- (a) one world, one run directory; (c) validation counts every image once ------------------


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory: pytest.TempPathFactory, colour_data) -> Path:
    """Two cycles of 6 steps on two nodes (validation at steps 6 and 12); the run directory."""
    work = tmp_path_factory.mktemp("two-nodes")
    nodes = TwoNodes(
        work,
        run_overrides(
            colour_data[0],
            "schedule.stepsize=3",
            "schedule.stepsize_epochs=null",
            "trainer.stop_after_cycles=2",
            "trainer.save_checkpoints=false",
            "trainer.record_lr=true",
        ),
        {"MAX_RESTARTS": "0"},
    )
    codes = nodes.finish()
    assert codes == [0, 0], nodes.stderr(0)[-3000:] + nodes.stderr(1)[-3000:]
    return work / "runs"


def test_two_agents_form_one_world_in_one_run_directory(two_node_run: Path) -> None:
    assert [p.name for p in two_node_run.iterdir()] == [f"torchrun-{RUN_ID}"]  # both nodes wrote there
    run = two_node_run / f"torchrun-{RUN_ID}"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records].count("start") == 1  # one writer for the two nodes
    assert records[0]["event"] == "start"
    plan = records[0]["resolved"]
    assert (plan["world_size"], plan["per_rank_batch"], plan["run_dir"]) == (2, 8, str(run))
    # 240 images in 2 shards of 120, 8 a rank: 15 steps an epoch.
    assert (plan["train_images"], plan["steps_per_epoch"], plan["planned_steps"]) == (240, 15, 12)
    # Each rank (one a node) recorded its 12 steps beside the other's.
    for rank in (0, 1):
        rows = (run / f"lr_rank{rank}.csv").read_text().splitlines()
        assert [int(row.split(",")[0]) for row in rows[1:]] == list(range(12))


def test_two_node_validation_counts_every_image_once(two_node_run: Path) -> None:
    run = two_node_run / f"torchrun-{RUN_ID}"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["resolved"]["val_images"] == VAL_IMAGES
    peaks = [r for r in records if r["event"] == "cycle_peak"]
    assert [(p["cycle"], p["step"]) for p in peaks] == [(1, 6), (2, 12)]
    for peak in peaks:
        # Every accuracy is a whole number of images out of 69. (The trainer itself refuses a
        # count other than 69, so the run would have failed had a node counted a shard twice.)
        for key in ("top1", "top5"):
            assert peak[key] * VAL_IMAGES == pytest.approx(round(peak[key] * VAL_IMAGES), abs=1e-6)


# --- (b) the two nodes read disjoint halves of every epoch -----------------------------------


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory, colour_data) -> dict:
    """tests/multinode_probe.py under two agents: what each rank read."""
    work = tmp_path_factory.mktemp("probe")
    nodes = TwoNodes(
        work,
        run_overrides(colour_data[0]),
        {"MAX_RESTARTS": "0", "MODULE": "tests.multinode_probe", "MULTINODE_PROBE_OUT": str(work / "probe")},
    )
    codes = nodes.finish()
    assert codes == [0, 0], nodes.stderr(0)[-3000:] + nodes.stderr(1)[-3000:]
    ranks = [json.loads((work / "probe" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return {"ranks": ranks}


def identify(samples: list[list[float]], images: dict[Colour, int]) -> list[Colour]:
    """The image each ``[label, r, g, b]`` sample came from (the one of the nearest colour),
    checking that the colour is that image's (within JPEG's error) and the label its class."""
    found = []
    for label, *mean in samples:
        colour = min(images, key=lambda c: max(abs(a - b) for a, b in zip(c, mean)))
        assert max(abs(a - b) for a, b in zip(colour, mean)) < 6, f"no image has the colour {mean}"
        assert images[colour] == label, f"image {colour} of class {images[colour]} came with label {label}"
        found.append(colour)
    return found


def read_every_image_once(per_rank: list[list[Colour]], images: dict[Colour, int]) -> bool:
    """Whether the ranks together read each image of ``images`` exactly once."""
    return sum((Counter(read) for read in per_rank), Counter()) == Counter(list(images))


def test_the_probe_ran_on_two_nodes(probe_run: dict) -> None:
    ranks = probe_run["ranks"]
    assert [(r["rank"], r["local_rank"], r["world_size"]) for r in ranks] == [(0, 0, 2), (1, 0, 2)]
    assert {r["group_rank"] for r in ranks} == {0, 1}  # two node ranks
    # One worker under each launch of the script, each under an agent of its own.
    assert [r["node"] for r in ranks] in (["0", "1"], ["1", "0"])
    assert ranks[0]["agent_pid"] != ranks[1]["agent_pid"]


@pytest.mark.parametrize("split", ["train", "val"])
def test_each_node_reads_its_own_half_of_the_epoch(probe_run: dict, colour_data, split: str) -> None:
    images = colour_data[1][split]
    read = [identify(rank[split], images) for rank in probe_run["ranks"]]
    assert read_every_image_once(read, images)
    if split == "train":
        assert [len(r) for r in read] == [120, 120]
    else:
        assert [len(r) for r in read] == [34, 35]  # DALI's shards: [0, 34) and [34, 69)


@pytest.mark.parametrize("split", ["train", "val"])
def test_the_check_catches_sharding_by_local_rank(probe_run: dict, colour_data, split: str) -> None:
    """The same workers' loaders built with shard_id=LOCAL_RANK: both nodes read shard 0."""
    images = colour_data[1][split]
    read = [identify(rank["local_rank_sharded"][split], images) for rank in probe_run["ranks"]]
    assert set(read[0]) == set(read[1])  # the same half on both nodes
    assert not read_every_image_once(read, images)


# --- (d) a lost node ends the job, or the job restarts ---------------------------------------
# 40 steps with a checkpoint every 4; a node is lost once a checkpoint at step 8 is complete.
# An uninterrupted run ends about 10 s after that point, a restarted one about 25 s after.

MAX_STEPS = 40


def training(work: Path, data: Path, env: dict[str, str]) -> TwoNodes:
    """Two nodes training ``MAX_STEPS`` steps, node 0 the rendezvous host."""
    overrides = run_overrides(data, f"trainer.max_steps={MAX_STEPS}", "trainer.checkpoint_every=4")
    return TwoNodes(work, overrides, env, stagger=True)


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


def newest_complete_checkpoint(run: Path) -> Path | None:
    """The newest checkpoint both ranks finished writing (a save ends with a barrier, so the one
    before a kill is complete; the one being written may not be)."""
    done = []
    for folder in (run / "checkpoints").glob("step-*"):
        try:
            if {"shared.pt", "rank0.pt", "rank1.pt"} <= {f.name for f in folder.iterdir()}:
                done.append(folder)
        except FileNotFoundError:  # pruned meanwhile
            continue
    return max(done, key=lambda p: p.name, default=None)


def wait_for_checkpoint(nodes: TwoNodes, run: Path, step: int, timeout: float = 120) -> Path:
    """The newest complete checkpoint once there is one at ``step`` or later."""
    deadline = time.monotonic() + timeout
    while True:
        saved = newest_complete_checkpoint(run) if (run / "checkpoints").is_dir() else None
        if saved is not None and step_of(saved) >= step:
            return saved
        for node, launch in enumerate(nodes.launches):
            assert launch.poll() is None, f"node {node} ended: {nodes.stderr(node)[-3000:]}"
        assert time.monotonic() < deadline, f"no checkpoint at step {step} after {timeout} s"
        time.sleep(0.05)


def wait_for_exit(nodes: TwoNodes, node: int, bound: float) -> int:
    """Node ``node``'s exit status, failing the test if it is still running ``bound`` seconds on."""
    try:
        return nodes.launches[node].wait(timeout=bound)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"node {node} still running {bound:.0f} s after the other was lost: {nodes.stderr(node)[-2000:]}"
        ) from None


def lose_node_for_good(work: Path, data: Path, env: dict, bound: float) -> tuple[int, Path, Path]:
    """Train on two nodes, kill node 1 once a checkpoint at step 8 or later is complete, and
    wait at most ``bound`` seconds for node 0 to end, which it must with a failure: its exit
    status, the run directory and the checkpoint complete before the loss."""
    nodes = training(work, data, env)
    run = work / "runs" / f"torchrun-{RUN_ID}"
    try:
        saved = wait_for_checkpoint(nodes, run, 8)
        nodes.kill_node(1)
        code = wait_for_exit(nodes, 0, bound)
    finally:
        nodes.kill_all()
    assert code != 0, nodes.stderr(0)[-3000:]
    return code, run, saved


def test_losing_a_node_ends_the_job_and_keeps_the_last_checkpoint(tmp_path: Path, colour_data) -> None:
    """MAX_RESTARTS=0: the surviving node's worker fails its next collective (gloo sees the
    closed connection at once) and its agent ends with it."""
    code, run, saved = lose_node_for_good(tmp_path, colour_data[0], {"MAX_RESTARTS": "0"}, 60)
    last = newest_complete_checkpoint(run)
    assert last is not None and step_of(last) >= step_of(saved)
    assert step_of(last) < MAX_STEPS  # the job did not finish: node 0 went on alone for no step
    assert torch.load(last / "shared.pt", weights_only=True)["step"] == step_of(last)


def test_losing_a_node_for_good_ends_the_job_within_two_minutes(tmp_path: Path, colour_data) -> None:
    """The default MAX_RESTARTS (3): the lost node never comes back. The other node's agent
    restarts its worker and waits RDZV_JOIN_TIMEOUT seconds (600 by default, 10 here) for the
    lost node to join again, then ends the job with an error."""
    code, run, saved = lose_node_for_good(tmp_path, colour_data[0], {"RDZV_JOIN_TIMEOUT": "10"}, 120)
    assert step_of(newest_complete_checkpoint(run)) >= step_of(saved)


def test_a_worker_lost_mid_step_restarts_both_nodes_from_the_last_checkpoint(tmp_path: Path, colour_data) -> None:
    """Node 1's worker dies while node 0's is in the middle of a step (held there with SIGSTOP,
    as a long step of a large model would hold it): agent 1 restarts for the failure, agent 0
    for the membership change, and the job must go on from the last checkpoint. (Without the
    SIGSTOP, which of the two agent 0 sees first is a race.)"""
    nodes = training(tmp_path, colour_data[0], {})
    run = tmp_path / "runs" / f"torchrun-{RUN_ID}"
    try:
        saved = wait_for_checkpoint(nodes, run, 8)
        (busy,) = workers(nodes, 0)
        (lost,) = workers(nodes, 1)
        os.kill(busy, signal.SIGSTOP)
        os.kill(lost, signal.SIGKILL)
        wait_for_output(nodes, 0, "closing signal SIGTERM", 60)  # agent 0 restarts its (stopped) worker
        os.kill(busy, signal.SIGCONT)
        codes = [wait_for_exit(nodes, node, 60) for node in (0, 1)]
    finally:
        nodes.kill_all()
    assert codes == [0, 0], nodes.stderr(0)[-2000:] + nodes.stderr(1)[-2000:]
    assert_resumed_and_finished(nodes, run, saved)


def test_a_lost_node_that_comes_back_resumes_the_job(tmp_path: Path, colour_data) -> None:
    """The header of launch/multi_node.sh: a node whose agent dies and comes back within the
    rendezvous timeout makes torchrun restart every worker from the last checkpoint."""
    nodes = training(tmp_path, colour_data[0], {})
    run = tmp_path / "runs" / f"torchrun-{RUN_ID}"
    try:
        saved = wait_for_checkpoint(nodes, run, 8)
        nodes.kill_node(1)
        nodes.start()  # the same command again on the node, as node 2 here
        codes = [wait_for_exit(nodes, node, 90) for node in (0, 2)]
    finally:
        nodes.kill_all()
    assert codes == [0, 0], nodes.stderr(0)[-2000:] + nodes.stderr(2)[-2000:]
    assert_resumed_and_finished(nodes, run, saved)


def workers(nodes: TwoNodes, node: int) -> list[int]:
    """The torchrun workers of node ``node`` (the agent sets LOCAL_RANK for its workers only)."""
    found = []
    for pid in descendants(nodes.launches[node].pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(variable.startswith(b"LOCAL_RANK=") for variable in environ):
            found.append(pid)
    return found


def wait_for_output(nodes: TwoNodes, node: int, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in nodes.stderr(node):
        assert time.monotonic() < deadline, f"node {node} did not print {text!r} in {timeout} s"
        time.sleep(0.05)


def assert_resumed_and_finished(nodes: TwoNodes, run: Path, saved: Path) -> None:
    stderr = "".join(nodes.stderr(node) for node in range(len(nodes.launches)))
    resumed = [int(line.rsplit(" ", 1)[1]) for line in stderr.splitlines() if line.startswith("clr-dist: resuming")]
    assert resumed and min(resumed) >= step_of(saved)
    assert step_of(newest_complete_checkpoint(run)) == MAX_STEPS
