"""TVM backend (Relax): front end -> IR passes -> (MetaSchedule) -> build -> runtime.

- Front end: the traced model's ONNX export (the TorchScript artifact cannot go through
  torch.export) imported with Relax's ONNX importer, weights bound as constants.
- IR: inference-time decomposition (batch norm), constant folding, operator fusion (Mish's
  exp/log/tanh fuse into one kernel with the convolution's epilogue), then TIR legalisation.
- Tuning: MetaSchedule's tune_relax into a JSON database kept per target
  (`compiler/tuning/<target>/`), so a later compile for the same target reuses it, as Neo ships
  pre-tuned logs. Trials add up across runs (`progress.json`), so an interrupted tuning resumes.
  Candidates build in worker processes kept across batches (`pooled_builder`).
- Build: one shared library (`model.so`) run by Relax's VirtualMachine.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from compiler.backend import BuildJob, Built, Capabilities
from compiler.targets import Target

TUNING_DIR = Path(__file__).parent / "tuning"
CAPABILITIES = Capabilities(dynamic_batch=False, threads=True, devices=("cpu",), target_specific=True)
BATCHES_PER_POOL = 32  # builder workers are replaced after this many batches (TVM's own caution: they leak)


def log(message: str) -> None:
    print(f"[compile:tvm] {message}", file=sys.stderr, flush=True)


def tvm_target(tgt: Target):
    import tvm

    mcpu = host_cpu() if tgt.name == "this_machine" else tgt.arch
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": tgt.cores or os.cpu_count() or 1})


def host_cpu() -> str:
    """LLVM's name for this CPU (e.g. znver3), as TVM's LLVM detects it."""
    import tvm

    return str(tvm.get_global_func("tvm.codegen.llvm.GetHostCPUName")())


def import_onnx(onnx_path: Path, input_name: str, shape: list[int]):
    """ONNX -> Relax IRModule with the weights bound as constants and inference-only ops decomposed."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(str(onnx_path)), shape_dict={input_name: shape}, keep_params_in_input=False)
    seq = tvm.transform.Sequential(
        [
            relax.transform.DecomposeOpsForInference(),
            relax.transform.FoldConstant(),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ]
    )
    return seq(mod)


def tuning_dir(tgt: Target, model_key: str, root: Path | None = None) -> Path:
    """Where a target's database for one model lives (under `root`, SAGESTACK_TUNING_DIR, or the shipped tree)."""
    return (root or TUNING_DIR) / f"{tgt.name}-{tgt.arch}" / model_key


def build(job: BuildJob) -> Built:
    """The static-shape export through Relax, tuned where the target's database has records (or trials asked)."""
    from compiler import onnx_backend

    static_onnx = job.out_dir / "model.static.onnx"  # Relax's importer needs every shape known
    onnx_backend.export(job.module, job.example, job.input_name, static_onnx, dynamic_batch=False)
    mod = import_onnx(static_onnx, job.input_name, job.shape)
    static_onnx.unlink()
    tuning = job.tuning
    database = tuning_dir(job.target, job.tuning_key, tuning.root) if tuning.use_database else None
    trials = 0
    if database is not None and tuning.trials:
        trials = tune(mod, job.target, database, tuning.trials, tuning.trials_per_task)
    library = build_library(mod, job.target, job.out_dir / "model.so", database)
    tuned = database is not None and (database / "database_tuning_record.json").exists()
    record = {"backend": "tvm-metaschedule" if tuned else "tvm-untuned",
              "tuning_database": str(database) if tuned else None,
              "tuning_trials": trials or (trials_done(database) if tuned else 0)}  # fmt: skip
    return Built(library, record)


def trials_done(work_dir: Path) -> int:
    progress = work_dir / "progress.json"
    return json.loads(progress.read_text())["trials"] if progress.exists() else 0


def tune(mod, tgt: Target, work_dir: Path, trials: int, trials_per_task: int) -> int:
    """Add `trials` MetaSchedule trials to the database in work_dir; returns the total so far.

    Builders and runners are worker processes that import TVM first (~10-20 s here), so their
    timeouts are generous, and the builder's are kept across batches (`pooled_builder`), so batches
    can be small without paying that import each time. MetaSchedule's progress table is printed as it
    goes. Its per-task logs go to work_dir/logs (not kept in git); the two JSON database files are what ships.
    """
    from tvm.s_tir import meta_schedule as ms

    work_dir.mkdir(parents=True, exist_ok=True)
    done = trials_done(work_dir)
    log(f"MetaSchedule: {trials} more trials (database {work_dir}, {done} done before)")
    builder = pooled_builder(max_workers=os.cpu_count() or 1, timeout_sec=600)
    try:
        ms.relax_integration.tune_relax(
            mod,
            params={},
            target=tvm_target(tgt),
            work_dir=str(work_dir),
            max_trials_global=trials,
            max_trials_per_task=trials_per_task,
            num_trials_per_iter=min(trials_per_task, 32),
            builder=builder,
            runner=ms.runner.LocalRunner(timeout_sec=120),
            strategy="evolutionary",
            seed=0,
        )
    finally:
        builder.shutdown()  # its workers, explicitly: TVM warns that leaving it to the GC can deadlock
    done += trials
    (work_dir / "progress.json").write_text(json.dumps({"trials": done}))
    return done


def pooled_builder(max_workers: int, timeout_sec: float, batches_per_pool: int = BATCHES_PER_POOL):
    """MetaSchedule's local builder with its worker processes kept across batches.

    LocalBuilder starts a fresh pool for every batch of candidates, and each worker imports TVM first
    (~35 s a batch on this machine). This one keeps its pool for `batches_per_pool` batches; the build in a
    worker is LocalBuilder's own (`_worker_func`: default_build, then default_export)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder, local_builder
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PooledBuilder(PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.pool: PopenPoolExecutor | None = None
            self.batches = 0

        def shutdown(self) -> None:
            if self.pool is not None:
                self.pool.shutdown()
                self.pool = None

        def build(self, build_inputs: list) -> list:
            if self.pool is None or self.batches >= batches_per_pool:
                if self.pool is not None:
                    self.pool.shutdown()
                self.pool, self.batches = PopenPoolExecutor(max_workers=max_workers, timeout=timeout_sec), 0
            self.batches += 1
            jobs = [(None, None, b.mod, b.target, local_builder._serialize_params(b.params)) for b in build_inputs]
            results = []
            for done in self.pool.map_with_error_catching(lambda job: local_builder._worker_func(*job), jobs):
                if done.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(done.value, None))
                elif done.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"PooledBuilder: timeout, killed after {timeout_sec} s"))
                else:
                    results.append(BuilderResult(None, f"PooledBuilder: an exception occurred\n{done.value}"))
            return results

    return PooledBuilder()


def build_library(mod, tgt: Target, out: Path, database: Path | None = None) -> Path:
    """Apply the tuned schedules where the database has them, compile, and write model.so."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    target = tvm_target(tgt)
    if database is not None and (database / "database_tuning_record.json").exists():
        db = ms.database.JSONDatabase(work_dir=str(database))
        with target, db, tvm.transform.PassContext(opt_level=3):
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    executable = tvm.compile(mod, target=target)
    executable.export_library(str(out))
    return out


class Runner:
    """A compiled model.so loaded into Relax's VM: numpy in, numpy out."""

    def __init__(self, library: Path, threads: int = 0, precision: str = "fp32") -> None:
        import tvm  # fp32 only (CAPABILITIES.precisions)
        from tvm import relax

        if threads:
            os.environ["TVM_NUM_THREADS"] = str(threads)
        self._tvm = tvm
        self.device = tvm.cpu()
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), self.device)
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with self.lock:  # one VM: the runtime's gRPC threads take turns
            out: Any = self.vm["main"](self._tvm.runtime.tensor(np.ascontiguousarray(x), self.device))
            outs = out if not hasattr(out, "numpy") else [out]
            return [o.numpy() for o in outs]
