"""``reminder triton``: a Triton Inference Server model repository of bundles, and the server."""

from __future__ import annotations

import time
from pathlib import Path

import click

from reminder.cli.common import say


@click.group()
def triton() -> None:
    """Serve bundles with Triton Inference Server: one model per bundle name, a version per increment."""


@triton.command("add")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--repo", type=click.Path(path_type=Path), required=True, help="Triton model repository folder.")
@click.option("--platform", type=click.Choice(["python", "onnxruntime", "tensorrt"]), default="python",
              show_default=True, help="python runs the ONNX model with ONNX Runtime inside Triton's Python backend "
                                      "(servers without the onnxruntime backend, such as the nvidia-pytriton wheel's); "
                                      "onnxruntime and tensorrt are NVIDIA's containers' backends.")
@click.option("--max-batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--instances", type=click.IntRange(1), default=1, show_default=True, help="Model instances.")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="Where the instances run (gpu for the onnxruntime and tensorrt platforms on a GPU server).")
@click.option("--queue-delay-us", type=click.IntRange(0), default=2000, show_default=True,
              help="How long the dynamic batcher waits to fill a batch.")
@click.option("--versions-served", type=click.IntRange(0), default=2, show_default=True,
              help="Newest versions kept loaded (0: all); 2 lets clients move to a new version while the "
                   "previous one still answers.")
@click.option("--reset-classes", is_flag=True, help="Accept a bundle whose classes do not extend the newest version's.")
def triton_add(bundle, repo, platform, max_batch_size, instances, kind, queue_delay_us, versions_served,
               reset_classes) -> None:
    """Add BUNDLE to the model repository as the next version of the model named after it."""
    from reminder.serving.repository import add_bundle

    folder = add_bundle(repo, bundle, platform=platform, max_batch_size=max_batch_size, instances=instances,
                        kind=kind, queue_delay_us=queue_delay_us, versions_served=versions_served,
                        reset_classes=reset_classes)
    click.echo(f"added {bundle} as {folder.parent.name} version {folder.name} ({platform}) in {repo}")


@triton.command("serve")
@click.option("--repo", type=click.Path(path_type=Path), required=True, help="Triton model repository folder.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--binary", type=click.Path(path_type=Path), default=None,
              help="tritonserver to run (default: on PATH, else the nvidia-pytriton wheel's).")
@click.option("--python-site", type=click.Path(path_type=Path), default=None,
              help="Packages of the Python backend (numpy<2, onnxruntime) for the wheel's server. "
                   "[default: $REMINDER_TRITON_SITE or PREFIX/triton-site]")
@click.option("--threads", type=click.IntRange(1), default=None, help="ONNX Runtime threads per model instance.")
def triton_serve(repo, host, http_port, grpc_port, metrics_port, binary, python_site, threads) -> None:
    """Run tritonserver on the repository until interrupted (Ctrl-C stops it cleanly)."""
    from reminder.serving.server import TritonServer

    server = TritonServer(repo, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                          binary=binary, python_site=python_site, threads=threads)
    with server:
        say(f"serving {repo}: HTTP {server.http_url}, gRPC {server.grpc_url}; new versions are loaded as they are "
            f"added; log in {server.log_path}")
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            say("stopping tritonserver")


@triton.command("deepstream-config")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the configuration.")
@click.option("--mode", type=click.Choice(["nvinferserver", "nvinfer"]), default="nvinferserver", show_default=True,
              help="nvinferserver: DeepStream's Triton plugin on the repository's model; nvinfer: TensorRT in "
                   "DeepStream on a bundle exported with --output logits.")
@click.option("--repo", type=click.Path(path_type=Path), default=None, help="nvinferserver: the model repository.")
@click.option("--grpc-url", default=None, help="nvinferserver: a running server instead (HOST:8001).")
@click.option("--max-batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--gpu-id", type=click.IntRange(0), default=0, show_default=True)
def triton_deepstream(bundle, out, mode, repo, grpc_url, max_batch_size, gpu_id) -> None:
    """Write DeepStream's nvinferserver or nvinfer configuration for BUNDLE, with its labels file."""
    from reminder.serving.deepstream import deepstream_config

    path = deepstream_config(bundle, out, mode=mode, repo=str(repo) if repo else None, grpc_url=grpc_url,
                             max_batch_size=max_batch_size, gpu_id=gpu_id)
    click.echo(f"wrote {path} and {path.parent / 'labels.txt'}")
