"""The Triton client backend: a bundle served by Triton Inference Server, called over HTTP or
gRPC with the same pre- and post-processing as the local backends (docs/serving.md).

``TritonBackend(url, model)`` reads the model's newest ready version and that version's
manifest (classes, colours, input) from the model's configuration (``reminder triton add``
puts each version's manifest there). Every call runs on that version; :meth:`refresh`
moves to a newer one when the server has it, so a stream follows the increments.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse

import numpy as np

from reminder.contracts.manifest import Manifest
from reminder.errors import LocalError, MissingDependency, ReminderError


def parse_url(url: str) -> tuple[str, str]:
    """``http://host:port`` or ``grpc://host:port`` (a bare ``host:port`` is HTTP) -> (protocol, host:port)."""
    if not isinstance(url, str) or not url:
        raise ReminderError(f"`url` must be a Triton address such as http://127.0.0.1:8000, got {url!r}")
    parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "grpc") or not parsed.hostname or parsed.path not in ("", "/"):
        raise ReminderError(f"`url` {url} is not http://HOST:PORT or grpc://HOST:PORT")
    port = parsed.port or (8000 if parsed.scheme == "http" else 8001)
    return parsed.scheme, f"{parsed.hostname}:{port}"


class TritonBackend:
    name = "triton"
    precision = "fp32"

    def __init__(self, url: str, model: str, *, timeout: float = 10.0, log=None):
        self.url, self.model, self.log = url, model, log
        self.protocol, self.address = parse_url(url)
        module = "tritonclient.http" if self.protocol == "http" else "tritonclient.grpc"
        try:
            import importlib

            self.client_module = importlib.import_module(module)
        except ImportError:
            raise MissingDependency(f"the triton backend needs {module}: pip install 'tritonclient[http,grpc]' "
                                    f"(or reminder[triton])") from None
        self.options = {"network_timeout": timeout, "connection_timeout": timeout} if self.protocol == "http" else {}
        self.local = threading.local()  # tritonclient's HTTP client (gevent) works in the thread that made it
        self.version, self.manifest = self.newest()

    @property
    def client(self):
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.client_module.InferenceServerClient(url=self.address, **self.options)
        return client

    def _say(self, action: str, error: Exception) -> Exception:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        lower = text.lower()
        if "version" in lower and ("not found" in lower or "unavailable" in lower or "not ready" in lower):
            return LocalError(f"Triton at {self.url}: model {self.model} version {self.version} is not available "
                              f"({text[:160]})")
        if "unknown model" in lower or "not found" in lower:
            return ReminderError(f"Triton at {self.url} has no model {self.model!r} ({text[:160]})")
        return LocalError(f"Triton at {self.url} (model {self.model}): {action} failed: {text[:200]}")

    def newest(self) -> tuple[int, Manifest]:
        """The newest version the server has ready, and its manifest."""
        try:
            metadata = self.client.get_model_metadata(self.model)
            config = self.client.get_model_config(self.model)
        except Exception as error:  # tritonclient raises its own exception types, and OSError
            raise self._say("reading the model", error) from None
        if self.protocol == "grpc":
            from google.protobuf.json_format import MessageToDict

            metadata = MessageToDict(metadata, preserving_proto_field_name=True)
            config = MessageToDict(config, preserving_proto_field_name=True).get("config", {})
        versions = sorted(int(v) for v in metadata.get("versions", []) if str(v).isdigit())
        if not versions:
            raise LocalError(f"Triton at {self.url} has no ready version of model {self.model}")
        version = versions[-1]
        parameter = config.get("parameters", {}).get(f"reminder_manifest_{version}", {}).get("string_value")
        if not parameter:
            raise ReminderError(f"model {self.model} on Triton at {self.url} has no class table for version "
                                f"{version}: add its bundles with reminder triton add")
        try:
            data = json.loads(base64.b64decode(parameter))
        except ValueError:
            raise ReminderError(f"model {self.model} on Triton at {self.url}: version {version}'s class table is "
                                f"not valid") from None
        return version, Manifest.from_json(data, f"Triton {self.url} model {self.model} version {version}")

    def refresh(self) -> bool:
        """Move to the server's newest version if it is newer; True when it moved."""
        version, manifest = self.newest()
        if version == self.version:
            return False
        self.version, self.manifest = version, manifest
        return True

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        module = self.client_module
        batch = np.ascontiguousarray(images, dtype=np.float32)
        request = module.InferInput("images", list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        outputs = [module.InferRequestedOutput(name) for name in ("labels", "confidence")]
        try:
            result = self.client.infer(self.model, [request], model_version=str(self.version), outputs=outputs)
        except Exception as error:  # tritonclient raises its own exception types, and OSError
            raise self._say("inference", error) from None
        labels, confidence = result.as_numpy("labels"), result.as_numpy("confidence")
        expected = (batch.shape[0], *batch.shape[2:])
        if labels is None or labels.shape != expected or (confidence is not None and confidence.shape != expected):
            raise ReminderError(f"Triton at {self.url} (model {self.model} version {self.version}) answered labels "
                                f"of shape {None if labels is None else labels.shape}, not {expected}")
        if labels.size and int(labels.max()) >= len(self.manifest.classes):
            raise ReminderError(f"Triton at {self.url} (model {self.model} version {self.version}) answered class "
                                f"{int(labels.max())}, but that version has {len(self.manifest.classes)} classes")
        return {"labels": labels, "confidence": confidence}

    def close(self) -> None:
        client = getattr(self.local, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a client whose server is gone
                pass


class TritonWatcher:
    """The stream's reloader for a served model: every ``interval`` seconds, asks the server
    for its newest version, and makes a predictor for it when it is newer than ``current``'s."""

    def __init__(self, model: str, make, interval: float, current):
        self.model, self.make, self.interval, self.current = model, make, interval, current
        self.checked = 0.0

    def poll(self):
        import time

        now = time.monotonic()
        if now - self.checked < self.interval:
            return None
        self.checked = now
        try:
            version, _ = self.current().backend.newest()
        except (LocalError, ReminderError):
            return None  # the server is away: inference says so, and retries
        if version <= self.current().backend.version:
            return None
        try:
            return self.make(self.model), None, self.model
        except (LocalError, ReminderError) as error:
            return None, str(error), self.model

    def close(self) -> None:
        pass


def predict_with_backoff(predictor, images, *, retries: int, backoff: float, log, stopping) -> list:
    """``predictor.predict(images)``; while the server cannot be reached, wait ``backoff``,
    doubling up to 10 s, and try again, ``retries`` times, saying so: the frames are kept,
    not dropped, and a server that comes back gets them."""

    for attempt in range(retries + 1):
        try:
            result = predictor.predict(images)
            if attempt:
                log(f"reconnected to Triton at {predictor.backend.url} after {attempt} retries")
            return result
        except LocalError as error:
            if attempt == retries or stopping.is_set():
                raise
            wait = min(backoff * 2 ** attempt, 10.0)
            log(f"{error}; retrying in {wait:.1f} s ({attempt + 1}/{retries})")
            try:  # the version it ran may be gone (no longer served): move to the newest
                old = predictor.version
                if predictor.refresh():
                    log(f"version {old} is no longer served: moved to {predictor.version}")
            except (LocalError, ReminderError):
                pass
            if stopping.wait(wait):
                raise
    raise AssertionError("unreachable")
