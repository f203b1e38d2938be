"""Several processes through accelerate: `finetune CMD ... --num_processes N` runs itself again under
accelerate's own launcher (`accelerate launch -m finetune.cli CMD ...`), as trl's CLI does for its scripts,
and every process learns from accelerate's state which one it is and where its model goes."""

import argparse
import os
import shlex
import signal
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.commands.launch import launch_command, launch_command_parser
from accelerate.utils import parse_flag_from_env
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from finetune import FinetuneError
from finetune.flags import option, positive_int

ACCELERATE_CONFIGS = Path(__file__).resolve().parent / "accelerate"
# The commands whose work is spread over processes; the others are one process's job.
SPREAD_COMMANDS = ("train", "evaluate", "predict", "demo")
# accelerate's launcher runs several CPU processes only through MPI; its multi-GPU path (torch's elastic
# launcher) runs them with gloo when this flag tells accelerate and the Trainer that there is no GPU.
USE_CPU = "ACCELERATE_USE_CPU"
# The launch flags as the user gave them, for the launched processes: a resume command must launch as this run did.
LAUNCH_FLAGS = "FINETUNE_LAUNCH_FLAGS"


def add_launch_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("several processes, one host (accelerate launch)")
    option(
        group,
        "num_processes",
        type=positive_int,
        help="processes to run, one a GPU (gloo CPU processes without); with --accelerate_config alone, one a GPU",
    )
    option(
        group,
        "accelerate_config",
        help="accelerate config file, or a shipped one: " + ", ".join(sorted(shipped_configs())),
    )


def shipped_configs() -> dict[str, Path]:
    return {path.stem: path for path in ACCELERATE_CONFIGS.glob("*.yaml")}


def split_launch_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The launch flags, and the command line without them (what each launched process runs)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    add_launch_args(parser)
    try:
        return parser.parse_known_args(argv)
    except argparse.ArgumentError as err:
        raise FinetuneError(str(err)) from None


def launch_flags(launch: argparse.Namespace) -> list[str]:
    """The launch flags of a command line that runs as this one: those given, or, in a process started by a
    plain `accelerate launch`, its number of processes."""
    if LAUNCH_FLAGS in os.environ:
        return shlex.split(os.environ[LAUNCH_FLAGS])
    flags = []
    if launch.num_processes is not None:
        flags += ["--num_processes", str(launch.num_processes)]
    if launch.accelerate_config is not None:
        flags += ["--accelerate_config", launch.accelerate_config]
    if flags:
        return flags
    processes = process_state().num_processes
    return ["--num_processes", str(processes)] if processes > 1 else []


def wants_launch(launch: argparse.Namespace) -> bool:
    return (launch.num_processes or 1) > 1 or launch.accelerate_config is not None


def accelerate_config(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if name in shipped:
        return shipped[name]
    raise FinetuneError(
        f"no accelerate config file {name!r} and no shipped one of that name ({', '.join(sorted(shipped))})"
    )


def relaunch(argv: list[str], launch: argparse.Namespace) -> None:
    """`accelerate launch [--config_file F] --num_processes N -m finetune.cli ARGV` on this host; raises
    if a process failed (each has already said why)."""
    # Not trl's CLI helpers: its launcher runs only files in trl/scripts, and its --accelerate_config names only trl's
    # configs (multi_gpu fixes bf16; no FSDP + QLoRA one). docs/design.md, "Several GPUs".
    flags = ["--main_process_port", "0"]  # a free port: several runs on one host do not collide
    if launch.accelerate_config is not None:
        flags += ["--config_file", str(accelerate_config(launch.accelerate_config))]
    else:  # what accelerate would otherwise warn that it assumed
        flags += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if (launch.num_processes or 1) > 1:
            flags.append("--multi_gpu")  # torch's elastic launcher, also for gloo CPU processes
    # the shipped configs name no number of processes, which accelerate's launcher then demands
    flags += ["--num_processes", str(launch.num_processes or max(torch.cuda.device_count(), 1))]
    if not torch.cuda.is_available():
        os.environ[USE_CPU] = "true"
    os.environ[LAUNCH_FLAGS] = shlex.join(launch_flags(launch))  # for the launched processes only
    try:
        launch_command(launch_command_parser().parse_args([*flags, "--module", "finetune.cli", *argv]))
    except ChildFailedError as err:
        raise launch_failure(err) from None
    except ValueError as err:  # what accelerate's launcher says of a config and flags that do not agree
        raise FinetuneError(f"accelerate launch: {' '.join(str(err).split())}") from None
    finally:
        os.environ.pop(LAUNCH_FLAGS, None)


def launch_failure(err: ChildFailedError) -> FinetuneError:
    """One line for the processes that failed; exiting as a signal would where every one was stopped by it (each
    has named its checkpoint)."""
    failed = ", ".join(f"process {rank} exited with {f.exitcode}" for rank, f in sorted(err.failures.items()))
    # torch's launcher stops the others with SIGTERM once one exits: -15, as a shell says 143
    codes = {128 - code if code < 0 else code for code in (failure.exitcode for failure in err.failures.values())}
    if len(codes) != 1 or not codes <= {128 + signal.SIGTERM, 128 + signal.SIGINT}:
        return FinetuneError(f"accelerate launch: {failed}")
    stopped = FinetuneError(f"accelerate launch: {failed}, stopped by a signal after the same step")
    stopped.exit_code = codes.pop()
    return stopped


def is_main_process() -> bool:
    """The process that speaks and writes for all: the only one, or rank 0 of those torch's launcher started (it
    sets RANK in each), asked without setting up accelerate's state."""
    return int(os.environ.get("RANK", "0")) == 0


def process_state() -> PartialState:
    """accelerate's view of this process (its rank, its device). On a machine without a GPU, several
    processes talk through gloo."""
    return PartialState(cpu=not torch.cuda.is_available())


def under_fsdp() -> bool:
    """Launched with an FSDP config (accelerate tells its processes through the environment)."""
    return parse_flag_from_env("ACCELERATE_USE_FSDP")
