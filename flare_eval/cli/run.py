"""``flare-eval run``: run a submission on every case, one fresh container per case, and time it."""

from __future__ import annotations

import argparse
from pathlib import Path

from flare_eval.errors import EXIT_OK, EXIT_PARTIAL

__all__ = ["register"]

DESCRIPTION = """\
Run a team's docker image (a 'docker save' tarball or an image name) on every
INPUTS/<id>_0000.nii.gz, each case alone in a fresh container, as the official FLARE
harness: /workspace/inputs (read-only) holds the case, the submission writes
/workspace/outputs/<id>.nii.gz, the command is 'sh predict.sh' in the image's working
directory. Each run is timed on the host; with --gpu, device-wide GPU memory is sampled
through NVML every 0.1 s. Writes into OUT/<team>/:
  predictions/<id>.nii.gz      valid outputs (feed them to 'flare-eval score')
  efficiency/<id>_0000.json    official samples (gpu_memory, cpu_list, RAM_list, time) + timestamps
  <team>_Efficiency.csv        official efficiency table, a row for every case
  runs.csv                     status (ok | timeout | crash | oom | no_output | bad_output | error),
                               exit code, OOM kill, time, max GPU memory, official, trapezoid and
                               over-tolerance GPU areas
  logs/<id>.stdout.txt, .stderr.txt   capped logs
Re-running the same command resumes: finished cases are skipped (status 'error', a failure
of the engine, is retried). '--backend local --submission DIR' runs DIR/predict.sh under
bubblewrap with the same contract, without docker (memory and process limits through a
cgroup of each case where the runner may make one, as root; none otherwise).

With --slots, cases run side by side, one container per slot, each pinned to its slot's
cores (docker --cpuset-cpus; local: taskset) and GPU (by UUID), sampling that GPU only;
runs.csv records each case's host, slot, cores and GPU. With --scheduler, the cases run on a
dask cluster of slot workers on many hosts (each worker one slot: --resources SLOT=1 and
FLARE_EVAL_SLOT, its own docker engine; docs/scale-out.md), as 'flare-eval evaluate
--scheduler' runs them, and each case's results come back into OUT/<team>/.

examples:
  flare-eval run --image teamx.tar.gz --inputs test_images --out results --gpu 0 --timeout 600
  flare-eval run --image teamx.tar.gz --inputs test_images --out results --slots 0:0-7,1:8-15
  flare-eval run --image teamx.tar.gz --inputs test_images --out results --timeout 600 \\
      --scheduler tcp://10.0.0.5:8786
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from flare_eval.cli.main import HelpFormatter
    from flare_eval.cli.parser import gpu_index
    from flare_eval.presets import FLARE23
    from flare_eval.cli.parser import SLOTS_HELP

    p = subparsers.add_parser(
        "run", help="run a submission's container on every case and measure its efficiency",
        description=DESCRIPTION, formatter_class=HelpFormatter,
    )
    p.add_argument("--image", metavar="IMAGE_OR_TARBALL", default=None,
                   help="docker save tarball or image name (docker backend)")
    p.add_argument("--inputs", type=Path, metavar="DIR",
                   help="folder of <id>_0000.nii.gz images (required unless --cleanup)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="results root folder (required unless --cleanup)")
    p.add_argument("--team", default=None,
                   help="team name (default: the tarball's or submission folder's name, as evaluate names teams)")
    p.add_argument("--gpu", type=gpu_index, default=None, metavar="INDEX",
                   help="GPU given to the submission (docker: --gpus device=INDEX; local: its device "
                   "nodes and CUDA_VISIBLE_DEVICES) and sampled; none if unset")
    p.add_argument("--slots", metavar="SPEC", default=None, help=SLOTS_HELP)
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="dask.distributed scheduler (tcp://HOST:PORT) of slot workers to run the "
                        "cases on (--image a docker save tarball; docs/scale-out.md)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="kill a case after this long (default: wait forever, as the official harness)")
    p.add_argument("--backend", choices=("docker", "local"), default="docker",
                   help="docker containers, or a local folder under bubblewrap")
    p.add_argument("--submission", type=Path, default=None, metavar="DIR",
                   help="folder with predict.sh (local backend)")
    p.add_argument("--memory", default=None, metavar="SIZE",
                   help="memory limit of a case, swap included (default: the official 28g, or "
                        "the slot's share of the host's RAM where that is less: RAM x the slot's "
                        "cores / the host's; more than the share is refused; local: enforced as root)")
    p.add_argument("--shm-size", default=None, metavar="SIZE",
                   help="container /dev/shm size (default as --memory)")
    p.add_argument("--network", default="none", help="container network mode")
    p.add_argument("--pids-limit", type=int, default=None, metavar="N",
                   help="most processes and threads of a case (default: the runner's, "
                   "docs/security.md; local: enforced as root)")
    p.add_argument("--per-process-gpu", action="store_true",
                   help="also record the GPU memory of the container's own processes")
    p.add_argument("--gpu-tolerance-mib", type=float, default=FLARE23.gpu_tolerance_mib,
                   help="tolerance of the over-tolerance GPU area in runs.csv")
    p.add_argument("--retry-failed", action="store_true",
                   help="re-run cases recorded with any status but ok")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--cleanup", action="store_true",
                   help="only clean up after killed runs, then exit: their staging folders "
                   "(and output tmpfs) that no live run holds and, with docker, their "
                   "containers past the deadline (timeout + 60 s); see docs/security.md")
    p.set_defaults(handler=run)


def _default_team(source: str) -> str:
    name = Path(source.rstrip("/")).name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name.split(":")[0]


def last_lines(path: Path, n: int = 3) -> list[str]:
    """The last ``n`` non-blank lines of a log (none if it is missing), ``ascii()``-safe."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
    return [ascii(line)[1:-1][:200] for line in lines[-n:]]


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings

    from flare_eval.errors import ConfigError
    from flare_eval.runner import (DockerBackend, DockerOptions, LocalBackend, connect, load_image,
                                   remove_expired, run_submission)
    from flare_eval.runner.slots import parse_slots

    if args.cleanup:
        from flare_eval.runner.intake import remove_stale_cases

        folders = remove_stale_cases()
        print(f"flare-eval run: removed {len(folders)} staging folder(s) of killed runs"
              + (f": {', '.join(f.name for f in folders)}" if folders else ""), file=sys.stderr)
        if args.backend == "docker":
            removed = remove_expired(connect())
            print(f"flare-eval run: removed {len(removed)} container(s) past their deadline"
                  + (f": {', '.join(removed)}" if removed else ""), file=sys.stderr)
        return EXIT_OK
    for name in ("inputs", "out"):
        if getattr(args, name) is None:
            raise ConfigError(f"--{name} is required (unless --cleanup)")
    if args.scheduler is not None:
        return _report(args, _run_on_cluster(args), args.team or _default_team(args.image))
    if args.gpu is not None:
        from flare_eval.runner.sampler import check_gpu

        check_gpu(args.gpu)  # before any case runs, not after every case failed
    slots = parse_slots(args.slots) if args.slots is not None else None
    if args.per_process_gpu and args.gpu is None and not any(slot.gpu for slot in slots or ()):
        raise ConfigError("--per-process-gpu needs a GPU: --gpu INDEX, or --slots with GPUs "
                          "(the GPU whose processes are sampled)")
    # unset: the runner's own default (one place: runner.docker_backend.PIDS_LIMIT)
    pids = {} if args.pids_limit is None else {"pids_limit": args.pids_limit}
    if args.backend == "local":
        if args.submission is None:
            raise ConfigError("--backend local needs --submission DIR (a folder with predict.sh)")
        backend = LocalBackend(args.submission, network=args.network, gpu_index=args.gpu,
                               memory=args.memory, **pids)
        source = str(args.submission)
    else:
        if args.image is None:
            raise ConfigError("--backend docker needs --image IMAGE_OR_TARBALL")
        client = connect()
        options = DockerOptions(gpu_index=args.gpu, memory=args.memory, shm_size=args.shm_size,
                                network=args.network, **pids)
        backend = DockerBackend(client, load_image(client, args.image), options)
        source = args.image
    team = args.team or _default_team(source)
    if args.gpu is None and not any(slot.gpu for slot in slots or ()):
        print("flare-eval run: note: no --gpu given, GPU memory is not sampled", file=sys.stderr)
    with warnings.catch_warnings():
        # One plain line per warning (no GPU, no NVML...) instead of a source location.
        warnings.showwarning = lambda message, *_, **__: print(
            f"flare-eval run: warning: {message}", file=sys.stderr)
        records = run_submission(
            backend, args.inputs, args.out, team=team, timeout_s=args.timeout,
            gpu_index=args.gpu, slots=slots, per_process_gpu=args.per_process_gpu,
            gpu_tolerance_mib=args.gpu_tolerance_mib, retry_failed=args.retry_failed,
            progress=not args.no_progress,
        )
    return _report(args, records, team)


def _run_on_cluster(args: argparse.Namespace) -> list[dict]:
    """``run --scheduler``: the cases on the cluster's slot workers; the ``runs.csv`` rows."""
    from flare_eval.errors import ConfigError
    from flare_eval.runner import DockerOptions
    from flare_eval.runner.fleet import refuse_local_options, run_submission_on_cluster

    refuse_local_options({"--slots": args.slots, "--gpu": args.gpu,
                          "--per-process-gpu": args.per_process_gpu,
                          "--backend local": args.backend == "local"})
    if args.image is None or not Path(args.image).is_file():
        raise ConfigError(f"--scheduler: --image must be a docker save tarball (each worker "
                          f"loads it on its own engine), got {args.image!r}",
                          hint="docker save team:latest -o team.tar.gz")
    pids = {} if args.pids_limit is None else {"pids_limit": args.pids_limit}
    options = DockerOptions(memory=args.memory, shm_size=args.shm_size, network=args.network,
                            **pids)
    return run_submission_on_cluster(
        args.scheduler, Path(args.image), args.inputs, args.out,
        team=args.team or _default_team(args.image), options=options, timeout_s=args.timeout,
        gpu_tolerance_mib=args.gpu_tolerance_mib, retry_failed=args.retry_failed,
        progress=not args.no_progress)


def _report(args: argparse.Namespace, records: list[dict], team: str) -> int:
    """Print the summary of a run's rows; the exit code."""
    import sys

    failed = [r for r in records if r["status"] != "ok"]
    print(f"flare-eval run: {len(records) - len(failed)}/{len(records)} cases ok; results in "
          f"{args.out / team}", file=sys.stderr)
    for r in failed:
        print(f"  {r['case']}: {r['status']}: {r['message']}", file=sys.stderr)
        # What a participant needs first (a missing module, a traceback's last line).
        for line in last_lines(args.out / team / "logs" / f"{r['case']}.stderr.txt"):
            print(f"    | {line}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK
