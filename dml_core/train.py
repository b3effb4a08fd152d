"""`python -m dml_core.train experiments/<name>.yaml [--set key.sub=value ...] [--out DIR]`.

Writes a run directory: the resolved `config.yaml`, `metrics.json` (status, final, best and
per-eval history) and `checkpoint.pt` (model, loss, optimizer, config, epoch).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from dml_core.cli import one_line_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dml_core.train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment YAML")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set optimizer.lr=3e-4 train.epochs=5 (repeatable)")
    parser.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    parser.add_argument("--resume", help="checkpoint file or run directory to continue from")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)

    with one_line_errors("dml_core.train", args.debug):
        from dml_core.config import load_config
        from dml_core.training import fit

        cfg = load_config(args.config, args.overrides)
        out = Path(args.out) if args.out else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        result = fit(cfg, out_dir=out, resume=args.resume, progress=True)
        primary = cfg.eval.primary_metric
        print(f"finished: {primary} {result.metrics.get(primary, float('nan')):.4f} "
              f"(best {result.best.get(primary, float('nan')):.4f} at epoch {int(result.best.get('epoch', 0))}); run dir {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
