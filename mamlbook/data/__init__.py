"""Data sets on disk: download, verify (checksums), extract and cache. No sampling logic lives here."""

from .omniglot import (
    FILES,
    FULL,
    MINIMAL,
    CharacterSet,
    LakeRuns,
    downsample,
    file_status,
    load_characters,
    load_lake_runs,
    omniglot_file,
    omniglot_folder,
)
from .pbc import PBCFiles, pbc_files, pbc_folder
from .remote import ChecksumError, DataError, DataMissingError, RemoteFile, download, extract, verify

__all__ = [
    "FILES",
    "FULL",
    "MINIMAL",
    "CharacterSet",
    "ChecksumError",
    "DataError",
    "DataMissingError",
    "LakeRuns",
    "PBCFiles",
    "RemoteFile",
    "download",
    "downsample",
    "extract",
    "file_status",
    "load_characters",
    "load_lake_runs",
    "omniglot_file",
    "omniglot_folder",
    "pbc_files",
    "pbc_folder",
    "verify",
]
