"""Regenerate `caffe_pb2.py` from `caffe.proto` (dev tool: needs grpcio-tools)."""

from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent


def main() -> None:
    status = protoc.main(["protoc", f"-I{HERE}", f"--python_out={HERE}", str(HERE / "caffe.proto")])
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")


if __name__ == "__main__":
    main()
