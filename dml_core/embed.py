"""`python -m dml_core.embed <run dir> <image folder> -o embeddings.parquet`

Embeds every image under a folder with a trained model: the way a user puts a model to use.
The folder has the layout training reads (`data.name: image_folder`): a `<class>/<image>` tree,
the class being the image's folder (nested trees too); anything else is refused with the same
message training gives (unlabelled images: put them in one folder, e.g. `<folder>/all/*.jpg`).
The parquet table has columns `path`, `label`, `embedding` (fixed-size list of float32), ready
for pyarrow, pandas or a faiss index. It is written atomically: whole, or not at all.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dml_core.cli import one_line_errors


def load_trained_model(run_dir: str | Path, device: str = "cpu"):
    """(config, model in eval mode) from a run directory written by `dml_core.train`."""
    from dml_core.config import config_from_dump
    from dml_core.models import build_model
    from dml_core.training import load_checkpoint
    from dml_core.training.checkpoint import checkpoint_file, restore

    ckpt = load_checkpoint(run_dir, map_location=device)
    source = checkpoint_file(run_dir)
    cfg = config_from_dump(ckpt["config"], str(source))
    in_channels = int(ckpt["in_channels"])
    # The weights come from the checkpoint: never try to fetch pretrained ones again.
    model = build_model(cfg.model.model_copy(update={"pretrained": False}), in_channels)
    restore(source, "model", model.load_state_dict, ckpt["model"])
    return cfg, model.to(device).eval(), in_channels


def image_folder_dataset(folder: Path, num_channels: int):
    """All images of a `<class>/<image>` tree, read exactly as training reads `data.root`."""
    from dml_core.data.image_folder import load_image_folder

    return load_image_folder(folder, "image folder", num_channels)


def check_output(output: str | Path) -> Path:
    """The parquet file to write, checked before hours of embedding: not empty, not a directory,
    and its folder created (or one line saying why it cannot be)."""
    from dml_core.io import make_dir

    text = str(output)
    if not text.strip():
        raise ValueError("-o '': empty; name the .parquet file to write")
    path = Path(text)
    if path.is_dir() or text.endswith("/"):
        raise ValueError(f"-o {text}: a directory; name the file to write, e.g. {path / 'embeddings.parquet'}")
    make_dir(path.parent)
    return path


def embed_folder(run_dir: str | Path, folder: str | Path, output: str | Path, device: str = "auto",
                 batch_size: int | None = None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from dml_core.data.transforms import build_transforms
    from dml_core.evaluation import embed_dataset
    from dml_core.io import atomic_write_bytes
    from dml_core.training import select_device
    from dml_core.training.features import vector_column

    output = check_output(output)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size: must be at least 1, got {batch_size}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu (or auto)")
    dev = select_device(device)
    cfg, model, in_channels = load_trained_model(run_dir, str(dev))
    ds = image_folder_dataset(Path(folder), 1 if in_channels == 1 else 3)
    transform = build_transforms(cfg.data, train=False, num_channels=ds.num_channels, pretrained=cfg.model.pretrained,
                                 out_channels=in_channels)
    emb, labels = embed_dataset(model, ds.with_transform(transform), batch_size or cfg.data.eval_batch_size, dev)
    table = pa.table({
        "path": pa.array(ds.paths, pa.string()),
        "label": pa.array([ds.class_names[i] for i in labels], pa.string()),
        "embedding": vector_column(emb),
    })
    atomic_write_bytes(output, lambda f: pq.write_table(table, f))
    return len(ds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dml_core.embed", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run directory written by python -m dml_core.train")
    parser.add_argument("folder", help="image folder to embed")
    parser.add_argument("-o", "--output", default="embeddings.parquet")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    with one_line_errors("dml_core.embed", args.debug):
        n = embed_folder(args.run_dir, args.folder, args.output, args.device, args.batch_size)
        print(f"embedded {n} images -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
