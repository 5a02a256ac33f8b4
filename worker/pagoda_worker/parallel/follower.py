"""A tensor-parallel follower (rank 1..N-1): load this rank's part of the model, then run every
step the driver sends (followers.py) until it says stop or is gone.

It runs the same forward passes as the driver, in the same order, so their collectives meet:
each step's forward and logits, and the prompt logits of steps that score prompts.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from multiprocessing.connection import Connection
from pathlib import Path

from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.model_runner import ModelRunner
from pagoda_worker.engine.rank_setup import build_runner, load_rank
from pagoda_worker.engine.startup import rank_device
from pagoda_worker.models.source import ModelLoadError
from pagoda_worker.parallel.followers import JOINING
from pagoda_worker.parallel.group import join, leave

log = logging.getLogger("pagoda.engine")


def follow(runner: ModelRunner, driver: Connection) -> None:
    """Run the driver's steps until it sends None or closes its end."""
    while True:
        try:
            arrays = driver.recv()  # the driver's send_bytes of a pickle: recv unpickles it
        except EOFError:
            log.warning("the driver is gone: stopping")
            return
        if arrays is None:
            return
        inputs = runner.inputs_from(arrays)
        _, hidden = runner.execute(inputs, None)
        for _ in runner.prompt_logits(inputs, hidden):
            pass


def main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    rank, size = spec["rank"], spec["size"]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when ranks stop
    line = f"%(asctime)s %(levelname)s rank{rank} %(name)s: %(message)s"  # the engine's, ranked
    logging.basicConfig(level=spec["log_level"], format=line)
    driver = Connection(spec["fd"])
    config = EngineConfig(**spec["config"])
    try:
        device = rank_device(config.device, rank, size)
        driver.send(JOINING)
        tp = join(rank, size, spec["store"], device)
        loaded = load_rank(config, Path(config.model), device, tp)
    except ModelLoadError as e:
        driver.send(str(e))
        return 1
    except Exception as e:
        log.exception("rank %d could not load", rank)
        driver.send(f"{type(e).__name__}: {e}")
        return 1
    driver.send(None)
    follow(build_runner(config, loaded), driver)
    leave()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
