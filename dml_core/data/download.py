"""Downloads for the datasets with an official, checksummed archive (used when ``data.download``).

Omniglot and CUB-200-2011 have stable public archives; the URLs and MD5s are the ones torchvision
(Omniglot) and the DML literature (CUB, CaltechDATA record 65de6-vp158) use. Cars196, SOP and
In-Shop have no maintained direct download; for those the error says where to get them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive

from dml_core.data.base import DatasetError


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    filename: str
    extracts_to: str  # what the archive creates in the root; present = already downloaded


OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"

ARCHIVES: dict[str, tuple[Archive, ...]] = {
    "digits": (),  # bundled with scikit-learn
    "omniglot": (
        Archive(f"{OMNIGLOT_URL}/images_background.zip", "68d2efa1b9178cc56df9314c21c6e718",
                "images_background.zip", "images_background"),
        Archive(f"{OMNIGLOT_URL}/images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811",
                "images_evaluation.zip", "images_evaluation"),
    ),
    "cub200": (
        Archive("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                "97eceeb196236b17998738112f37df78", "CUB_200_2011.tgz", "CUB_200_2011"),
    ),
}

MANUAL: dict[str, str] = {
    "image_folder": "image_folder reads your own folder; there is nothing to download",
    "cars196": "get car_ims.tgz and cars_annos.mat (Krause et al., Stanford Cars) from a mirror; extract into data.root",
    "sop": "get Stanford_Online_Products.zip from https://cvgl.stanford.edu/projects/lifted_struct/; extract into data.root",
    "inshop": (
        "request DeepFashion In-Shop access at http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html; "
        "put list_eval_partition.txt and img/ in data.root"
    ),
}


def ensure_downloaded(name: str, root: str | Path | None) -> None:
    """Download and extract ``name``'s archives into ``root`` unless already extracted there."""
    if name not in ARCHIVES:
        raise DatasetError(f"data.download: no direct download for {name}; {MANUAL.get(name, 'see its module docstring')}")
    if not ARCHIVES[name]:
        return
    if root is None:
        raise DatasetError(f"data.root: required with data.download (the folder to download {name} into)")
    root = Path(root).expanduser()
    for archive in ARCHIVES[name]:
        if (root / archive.extracts_to).exists():
            continue
        try:
            download_and_extract_archive(archive.url, str(root), filename=archive.filename, md5=archive.md5)
        except (OSError, RuntimeError, ValueError) as e:  # URLError/HTTPError/timeouts are OSErrors; bad MD5 a RuntimeError
            reason = " ".join(str(e).split()) or type(e).__name__
            raise DatasetError(
                f"data.download: could not fetch {archive.url} into {root} ({reason}); "
                f"download it by hand and extract it into data.root"
            ) from None
