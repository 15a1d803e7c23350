"""A build worker: lease jobs from central, build each in a child process, hand back bundles.

``builder worker --central URL --token T`` runs anywhere (a GPU machine takes TensorRT jobs);
``central serve`` starts one on the same machine by default. The build runs in a child
process so a crash or an OOM kill ends the job, not the worker; the child dies with the
worker (PR_SET_PDEATHSIG) so a killed worker leaves no orphan builds. While it builds, the
worker heartbeats (a lease that stops heartbeating expires and another worker takes the job),
streams log lines, and enforces the time limit.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import msgspec

from artifacts.client import BundleRef, PullTarget, RegistryClient, SignedManifest, decode_b64
from artifacts.digests import hex_of, sha256_bytes
from artifacts.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    Overloaded,
    RegistryUnavailableError,
    ShipyardError,
)
from artifacts.manifest import MANIFEST_FILE, SIGNATURE_FILE
from artifacts.probe import probe_node
from artifacts.provenance import BuildParameters, sign_statement, verification_statement
from artifacts.signing import (
    PRIVATE_KEY_FILE,
    SigningKey,
    TrustedKeys,
    generate_keypair,
    load_signing_key,
)
from artifacts.targets import CPU_TARGETS, GPU_TARGETS, INDEX_TARGET
from artifacts.wire import JobDone, Lease, WorkerHello

log = logging.getLogger("shipyard.worker")
CACHE_MAX_AGE_S = 7 * 86400.0
PRUNE_EVERY_S = 3600.0


class WorkerConfig(msgspec.Struct, kw_only=True):
    central: str
    token: str
    name: str
    work_dir: str
    concurrency: int = 1
    lease_wait: float = 20.0
    build_timeout: float = 1800.0
    targets: list[str] = []  # empty: everything this host can build
    threads: int = 0
    # the most bytes one input blob (model source tarball, eval/calibration set, catalog) may
    # have: a job names its inputs by digest only, so without a cap a compromised or buggy
    # central could stream until the worker's disk is full before the digest check fails
    max_input_bytes: int = 16 << 30
    # gate openvino-int8 in BF16 too where this host runs it natively: only where the fleet's
    # verifying workers can (a claim they cannot check sends the job from worker to worker)
    bf16: bool = True


def own_key(keys_dir: Path) -> SigningKey:
    """This worker's signing key, generated here on first start (the private half never
    leaves this host; central only ever sees the public half)."""
    priv = keys_dir / PRIVATE_KEY_FILE
    if not priv.exists():
        generate_keypair(keys_dir, overwrite=True)
    return load_signing_key(priv)


def buildable_targets() -> list[str]:
    """What this host's environment can build: a `gpu-builder` environment has no OpenVINO/NNCF
    (so no openvino-int8), a host without a GPU and TensorRT no TensorRT targets."""
    import importlib.util

    from builder.targets.tensorrt import preflight

    have = {m for m in ("openvino", "nncf", "onnxruntime") if importlib.util.find_spec(m)}
    needs = {"openvino-int8": {"openvino", "nncf"}}
    targets = [t for t in CPU_TARGETS if needs.get(t, {"onnxruntime"}) <= have]
    if preflight() is None:
        targets += [t for t in GPU_TARGETS if t.startswith("tensorrt")]
    return targets


def worker_targets() -> list[str]:
    """What this host's worker takes: the model targets it can build, and catalog index jobs
    where onnxruntime (to embed) and usearch (to index) are installed."""
    import importlib.util

    targets = buildable_targets()
    if all(importlib.util.find_spec(m) for m in ("onnxruntime", "usearch")):
        targets.append(INDEX_TARGET)
    return targets


def toolchain(caps) -> dict[str, str]:
    """What determines a build's output besides its inputs (part of the build-cache key)."""
    from builder.pipeline import _toolchain

    tc = _toolchain()
    if caps.tensorrt:
        tc["tensorrt"] = caps.tensorrt
    if caps.gpus:
        tc["gpu"] = ",".join(sorted({g.compute_capability for g in caps.gpus}))
    return tc


# ---- the child process ------------------------------------------------------------------


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: best effort
        pass


class _FileReporter:
    def __init__(self, path: Path) -> None:
        self.fh = open(path, "a", buffering=1)  # noqa: SIM115 - closed with the process

    def _w(self, text: str) -> None:
        self.fh.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    def begin(self, scope: str, total: int) -> None:
        self._w(f"{scope}: start")

    def step(self, scope: str, message: str) -> None:
        self._w(f"{scope}: {message}")

    def end(self, scope: str, ok: bool, message: str) -> None:
        self._w(f"{scope}: {'ok' if ok else 'FAILED'} {message}")


def build_child(spec_path: str) -> None:
    """Entry point of the build process: run the pipeline, write result.json."""
    _die_with_parent()
    spec = json.loads(Path(spec_path).read_text())
    jobdir = Path(spec_path).parent
    reporter = _FileReporter(jobdir / "build.log")
    try:
        if spec.get("verify") is not None:
            result = _verify_in_child(spec["verify"], reporter)
        elif spec.get("index") is not None:
            result = _index_in_child(spec["index"], reporter, verify=spec.get("phase") == "verify")
        else:
            from builder.pipeline import BuildConfig, build

            report = build(msgspec.convert(spec["config"], BuildConfig), reporter)
            t = report.targets[0]
            result = {"passed": t.passed, "reason": t.reason, "path": t.path}
    except ShipyardError as exc:
        reporter.step("job", f"error: {exc}")
        result = {"passed": False, "reason": str(exc), "path": None, "retry": False}
    except Exception as exc:
        reporter.step("job", "crashed:\n" + traceback.format_exc())
        result = {"passed": False, "reason": f"{type(exc).__name__}: {exc}", "retry": True}
    (jobdir / "result.json").write_text(json.dumps(result))


def result_action(phase: str, result: dict) -> str:
    """What a finished job's result asks of the worker: ``attest`` (sign a verdict on another
    worker's bundle, passed or not), ``fail`` or ``hand_over`` (upload the built bundle). A
    verification this host could not do (``retry``) is no verdict: it fails back for another
    worker to verify."""
    if phase == "verify" and result.get("verified") and not result.get("retry"):
        return "attest"
    return "hand_over" if result["passed"] else "fail"


def _verdict_result(verdict, reporter: _FileReporter) -> dict:
    """A verification's result file: the verdict, and whether another worker should try."""
    reporter.step("verify", f"{'passed' if verdict.passed else 'FAILED'} {verdict.reason}")
    return {
        "passed": verdict.passed,
        "metrics": verdict.metrics,
        "thresholds": verdict.thresholds,
        "reason": verdict.reason,
        "verified": True,
        "retry": verdict.retry,
    }


def _verify_in_child(spec: dict, reporter: _FileReporter) -> dict:
    from artifacts.bundle import verify_bundle
    from builder.verify import VerifySpec, verify_bundle_quality

    vs = msgspec.convert(spec, VerifySpec)
    reporter.step("verify", "golden smoke check + gate against a fresh FP32 reference")
    verdict = verify_bundle_quality(verify_bundle(Path(vs.bundle_dir), None), vs)
    return _verdict_result(verdict, reporter)


def _index_in_child(spec: dict, reporter: _FileReporter, *, verify: bool) -> dict:
    from builder.index_job import IndexJobSpec, build_index_job, verify_index_job
    from builder.verify import Verdict

    js = msgspec.convert(spec, IndexJobSpec)
    if not verify:
        reporter.step("index", f"embed {Path(js.catalog).name} and build the index")
        result = build_index_job(js)
        reporter.step("index", f"{'built' if result['passed'] else 'FAILED'} {result['reason']}")
        return result
    reporter.step("verify", "items, version lock, every vector, recall@10 against exact search")
    try:
        verdict = verify_index_job(js)
    except Exception as exc:  # a bundle that breaks the checker fails them: no retry, no reroll
        reporter.step("verify", "crashed:\n" + traceback.format_exc())
        verdict = Verdict(False, {}, {}, f"verification error: {type(exc).__name__}: {exc}")
    return _verdict_result(verdict, reporter)


# ---- the worker -------------------------------------------------------------------------


class Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.work = Path(cfg.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.stop_event = threading.Event()
        self.client = RegistryClient(cfg.central, cfg.token, timeout=60)
        self.caps = probe_node()
        self.targets = cfg.targets or worker_targets()
        self.toolchain = toolchain(self.caps)
        self._extract_lock = threading.RLock()  # _source holds it around _blob
        self.key = own_key(self.work / "keys")

    def register_key(self) -> None:
        """Tell central the public half of this worker's key (a no-op when it has it)."""
        self.client.register_worker_key(self.cfg.name, self.key.public_pem().decode())
        log.info("signing key %s registered for %s", self.key.key_id, self.cfg.name)

    def hello(self) -> None:
        delay = 0.5
        while not self.stop_event.is_set():
            try:
                self.register_key()
                self.client.worker_hello(
                    WorkerHello(
                        name=self.cfg.name,
                        capabilities=self.caps,
                        toolchain=self.toolchain,
                        targets=self.targets,
                    )
                )
                log.info(
                    "registered with %s as %s (targets: %s)",
                    self.cfg.central,
                    self.cfg.name,
                    ", ".join(self.targets),
                )
                return
            except (RegistryUnavailableError, Overloaded) as exc:
                if isinstance(exc, Overloaded):  # central said when: not sooner
                    delay = max(delay, min(exc.retry_after_s, 15))
                log.warning("central unavailable (%s); retrying in %.1f s", exc, delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, 15)
            except (AuthError, ConflictError) as exc:  # not enrolled, disabled, key mismatch
                log.error("central refuses this worker: %s", exc)
                self.stop_event.set()
                return

    def run(self) -> None:
        self.hello()
        threads = [
            threading.Thread(target=self._loop, name=f"lease-{i}", daemon=True)
            for i in range(self.cfg.concurrency)
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)
        self.client.close()

    def prune(self, max_age_s: float = CACHE_MAX_AGE_S) -> int:
        """Downloaded blobs, extracted sources and bundle downloads unused for ``max_age_s``
        go (a worker's disk otherwise only grows); what a running job uses is fresh."""
        cutoff = time.time() - max_age_s
        removed = 0
        with self._extract_lock:
            for sub in ("blobs", "src", "downloads", "references"):
                folder = self.work / sub
                if not folder.is_dir():
                    continue
                for entry in folder.iterdir():
                    try:
                        if entry.stat().st_mtime >= cutoff:
                            continue
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry)
                        else:
                            entry.unlink()
                        removed += 1
                    except FileNotFoundError:
                        continue
        return removed

    def _loop(self) -> None:
        last_prune = 0.0
        while not self.stop_event.is_set():
            if time.monotonic() - last_prune > PRUNE_EVERY_S:
                last_prune = time.monotonic()
                try:
                    if n := self.prune():
                        log.info("pruned %d cached inputs unused for a week", n)
                except OSError as exc:
                    log.warning("pruning the work dir: %s", exc)
            try:
                lease = self.client.lease(self.cfg.name, self.cfg.lease_wait)
            except NotFoundError:  # central forgot us (fresh database): register again
                self.hello()
                continue
            except ShipyardError as exc:  # registry down, 5xx, or an answer we cannot use
                log.warning("lease failed: %s", exc)
                self.stop_event.wait(2)
                self.hello()
                continue
            if lease is not None:
                try:
                    self.run_job(lease)
                except Exception:
                    log.exception("job %s", lease.job_id)

    # ---- one job ------------------------------------------------------------------------

    def _blob(self, digest: str) -> Path:
        path = self.work / "blobs" / hex_of(digest)
        with self._extract_lock:  # the pruner holds it too
            if path.exists():
                os.utime(path)  # in use: pruning keeps it
                return path
        self.client.download_blob(digest, path, size=self.cfg.max_input_bytes)
        return path

    def _source(self, digest: str) -> Path:
        from artifacts import sourcetar

        dest = self.work / "src" / hex_of(digest)
        with self._extract_lock:
            if dest.exists():
                os.utime(dest)  # in use: pruning keeps it
            else:
                tmp = dest.with_name(dest.name + f".{os.getpid()}.partial")
                shutil.rmtree(tmp, ignore_errors=True)
                sourcetar.extract(self._blob(digest), tmp)
                os.replace(tmp, dest)
        return dest

    def _index_inputs(self, lease: Lease, jobdir: Path) -> dict:
        """An index job: the catalog, and the input bundles as signed (checked here)."""
        req, spec = lease.request, lease.request.index
        assert spec is not None
        refs = {
            "model": BundleRef(spec.model, spec.version, spec.target),
            "base": BundleRef(req.model, spec.base_version, INDEX_TARGET),
            "previous": BundleRef(req.model, spec.previous_version, INDEX_TARGET),
        }
        dirs: dict[str, str | None] = {"base": None, "previous": None}
        for kind, signed in lease.inputs.items():
            if kind not in refs:
                raise ShipyardError(f"unexpected input bundle {kind!r}")
            dest = jobdir / kind
            self.client.pull_bundle(
                SignedManifest(decode_b64(signed.manifest, "manifest"), signed.signature),
                PullTarget(dest, self.work / "downloads"),
                TrustedKeys.of(signed.builder_key.encode()),
                expect=refs[kind],
            )
            dirs[kind] = str(dest)
        if "model" not in dirs:
            raise ShipyardError("the lease names no model bundle to embed with")
        job: dict[str, Any] = {
            "model_dir": dirs["model"],
            "base_dir": dirs["base"],
            "previous_dir": dirs["previous"],
            "catalog": str(self._blob(req.source_blob)),
            "queries": str(self._blob(spec.queries_blob)) if spec.queries_blob else None,
            "vectors": str(self._blob(spec.vectors_blob)) if spec.vectors_blob else None,
            "name": req.model,
            "version": lease.version,
            "recall_threshold": req.thresholds.get("recall_at_10"),
            "threads": self.cfg.threads,
        }
        if lease.phase == "verify":
            job["bundle_dir"] = str(self._fetch_bundle(lease, jobdir / "bundle"))
        else:
            params = BuildParameters.for_job(req, lease.target, lease.version)
            job |= {
                "out_dir": str(jobdir / "out"),
                "key_file": str(self.key.path),
                "provenance": {"builder": self.cfg.name, "params": params.as_dict()},
            }
        return {"index": job, "phase": lease.phase}

    def _inputs(self, lease: Lease, jobdir: Path) -> dict:
        """Fetch the source (and data) and describe the child's work."""
        req = lease.request
        if req.index is not None:
            return self._index_inputs(lease, jobdir)
        common = {
            "model_dir": str(self._source(req.source_blob)),
            "task": req.task,
            "eval_file": str(self._blob(req.eval_blob)) if req.eval_blob else None,
            "thresholds": req.thresholds,
            "threads": self.cfg.threads,
            "reference_cache_dir": str(self.work / "references"),
        }
        if lease.phase == "verify":
            assert lease.verify is not None
            bundle = self._fetch_bundle(lease, jobdir / "bundle")
            basis = "task" if req.prune else "fidelity"
            return {"verify": {**common, "bundle_dir": str(bundle), "basis": basis}}
        params = BuildParameters.for_job(req, lease.target, lease.version)
        config = {
            **common,
            "model_name": req.model,
            "out_dir": str(jobdir / "out"),
            "targets": [lease.target],
            "calibration_file": str(self._blob(req.calibration_blob))
            if req.calibration_blob
            else None,
            "max_batch": req.max_batch,
            "trt_compat": req.trt_compat,
            "prune": req.prune,
            "bf16": self.cfg.bf16,
            "version": lease.version,
            "key_file": str(self.key.path),
            "provenance": {"builder": self.cfg.name, "params": params.as_dict()},
        }
        return {"config": config}

    def _fetch_bundle(self, lease: Lease, dest: Path) -> Path:
        """The bundle to verify, checked against its builder's signature before anything runs."""
        v = lease.verify
        assert v is not None
        trusted = TrustedKeys.of(v.builder_key.encode())
        self.client.pull_bundle(
            SignedManifest(decode_b64(v.manifest, "manifest"), v.signature),
            PullTarget(dest, self.work / "downloads"),
            trusted,
            expect=BundleRef(
                lease.request.model, lease.version, lease.request.bundle_key(lease.target)
            ),
        )
        return dest

    def run_job(self, lease: Lease) -> None:
        req = lease.request
        jobdir = self.work / "jobs" / f"{lease.job_id}-{lease.phase}-{lease.attempt}"
        shutil.rmtree(jobdir, ignore_errors=True)
        jobdir.mkdir(parents=True)
        log.info(
            "job %s: %s %s %s (attempt %s)",
            lease.job_id,
            lease.phase,
            req.model,
            lease.target,
            lease.attempt,
        )
        try:
            spec = self._inputs(lease, jobdir)
        except ShipyardError as exc:
            self._fail(
                lease,
                f"could not fetch the job's inputs: {exc}",
                retry=isinstance(exc, RegistryUnavailableError),
            )
            return
        (jobdir / "spec.json").write_text(json.dumps(spec))
        (jobdir / "build.log").touch()
        child = mp.get_context("spawn").Process(
            target=build_child, args=(str(jobdir / "spec.json"),), daemon=False
        )
        child.start()
        outcome = self._supervise(lease, child, jobdir)
        if outcome is not None:
            self._fail(lease, outcome, retry=True)
            return
        result_path = jobdir / "result.json"
        if not result_path.exists():
            code = child.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            tail = (jobdir / "build.log").read_text()[-1500:]
            self._fail(
                lease,
                f"job process died ({how}; out of memory?); last log lines:\n{tail}",
                retry=True,
            )
            return
        result = json.loads(result_path.read_text())
        try:
            action = result_action(lease.phase, result)
            if action == "attest":
                self._attest(lease, result)
            elif action == "fail":
                self._fail(lease, result["reason"], retry=result.get("retry", False))
            else:
                self._hand_over(lease, Path(result["path"]))
        except ConflictError as exc:
            log.warning(
                "job %s: lease lost before completion (%s); result discarded", lease.job_id, exc
            )
        finally:
            shutil.rmtree(jobdir, ignore_errors=True)

    def _hand_over(self, lease: Lease, bundle: Path) -> None:
        """Upload the built bundle's files; hand over its manifest and OMS signature."""
        manifest = json.loads((bundle / MANIFEST_FILE).read_bytes())
        for f in manifest["files"]:
            self.client.upload_blob(f["sha256"], bundle / f["path"])
        self.client.job_complete(
            lease.job_id,
            JobDone(
                lease_token=lease.lease_token,
                manifest=base64.b64encode((bundle / MANIFEST_FILE).read_bytes()).decode(),
                signature=(bundle / SIGNATURE_FILE).read_text(),
            ),
        )
        log.info("job %s: built (%s)", lease.job_id, manifest["quality"]["config"])

    def _attest(self, lease: Lease, result: dict) -> None:
        """Sign and hand over the verdict on another worker's bundle (passed or not)."""
        v = lease.verify
        assert v is not None
        manifest = decode_b64(v.manifest, "manifest")
        statement = verification_statement(
            subject=f"{lease.request.model}/v{lease.version}/"
            f"{lease.request.bundle_key(lease.target)}/{MANIFEST_FILE}",
            manifest_digest=sha256_bytes(manifest),
            verifier=self.cfg.name,
            builder=v.builder,
            passed=bool(result["passed"]),
            metrics=result.get("metrics", {}),
            thresholds=result.get("thresholds", {}),
            reason=result.get("reason", ""),
        )
        attestation = sign_statement(statement, self.key).decode()
        self.client.job_complete(
            lease.job_id, JobDone(lease_token=lease.lease_token, attestation=attestation)
        )
        log.info(
            "job %s: verification %s", lease.job_id, "passed" if result["passed"] else "FAILED"
        )

    def _supervise(self, lease: Lease, child, jobdir: Path) -> str | None:
        """Stream logs and heartbeat until the child ends. Returns a failure reason for a
        timeout/shutdown (retryable); None when the child finished on its own."""
        started = time.monotonic()
        beat_every = max(0.5, lease.lease_seconds / 3)
        last_beat = 0.0
        offset = 0
        logfile = jobdir / "build.log"
        while True:
            done = not child.is_alive()
            with open(logfile) as fh:
                fh.seek(offset)
                chunk = fh.read()
                offset = fh.tell()
            lines = [line for line in chunk.splitlines() if line]
            if lines:
                try:
                    self.client.job_logs(lease.job_id, lease.lease_token, lines)
                except ConflictError:
                    child.kill()
                    return None
                except ShipyardError:
                    pass  # logs are best effort; the heartbeat decides
            if done:
                child.join()
                return None
            now = time.monotonic()
            if now - last_beat >= beat_every:
                last_beat = now
                try:
                    if self.client.heartbeat(lease.job_id, lease.lease_token).cancelled:
                        child.kill()
                        child.join()
                        log.info("job %s cancelled", lease.job_id)
                        return None
                except ConflictError:
                    log.warning("job %s: lease lost; stopping the build", lease.job_id)
                    child.kill()
                    child.join()
                    return None
                except ShipyardError as exc:
                    log.warning("heartbeat failed: %s", exc)
            if now - started > self.cfg.build_timeout:
                child.kill()
                child.join()
                return f"build exceeded the {self.cfg.build_timeout:.0f} s time limit"
            if self.stop_event.is_set():
                child.kill()
                child.join()
                return "worker shut down during the build"
            time.sleep(0.5)

    def _fail(self, lease: Lease, reason: str, *, retry: bool) -> None:
        with contextlib.suppress(ConflictError):  # the lease is gone: nothing to report
            self.client.job_fail(
                lease.job_id, JobDone(lease_token=lease.lease_token, reason=reason, retry=retry)
            )
        log.warning(
            "job %s failed%s: %s", lease.job_id, " (will retry)" if retry else "", reason[:300]
        )


def run_worker(cfg: WorkerConfig) -> None:
    worker = Worker(cfg)

    def _stop(*_a) -> None:
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run()
