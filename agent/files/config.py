"""Configuration of the file watcher (`type = "file_watch"`) and the mount sensor (`type = "mounts"`)."""

from __future__ import annotations

import re

import msgspec

from agent.section import duration, size

Duration = int | float | str
Size = int | str

DEFAULT_EXCLUDE = ("*/.git/*", "*/node_modules/*", "*/__pycache__/*", "*/.cache/*")
DEFAULT_SYNC_FOLDERS = ("Dropbox", "OneDrive", "Nextcloud", "ownCloud", "Google Drive", "pCloudDrive", "Seafile")
_CLASS_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ClassifyConfig(_Section):
    """What the content counter may read of one file; the cap it reached is named in the event."""

    enabled: bool = True
    max_bytes: Size = "64MiB"  # content read, over all members of an archive
    max_rows: int = 1_000_000
    max_seconds: Duration = "10s"
    hash_max_bytes: Size = "2GiB"  # larger files are reported without SHA-256
    max_members: int = 1000  # files read inside one ZIP archive
    patterns: dict[str, str] = msgspec.field(default_factory=dict)  # class name -> regular expression

    def __post_init__(self) -> None:
        size(self.max_bytes, "max_bytes")
        size(self.hash_max_bytes, "hash_max_bytes")
        duration(self.max_seconds, "max_seconds")
        if self.max_rows <= 0 or self.max_members <= 0:
            raise ValueError("max_rows and max_members: must be positive numbers")
        for name, pattern in self.patterns.items():
            if not _CLASS_NAME.match(name):
                raise ValueError(f"patterns: {name!r} is not a class name (lower-case letters, digits and _)")
            try:
                re.compile(pattern.encode("utf-8"))
            except re.error as e:
                raise ValueError(f"patterns: {name!r} is not a valid regular expression ({e})") from None


class MountPolicyConfig(_Section):
    """How a mount is classed: shared by the file watcher and the mount sensor (give both the same values)."""

    removable_mounts: list[str] = msgspec.field(default_factory=list)  # mount-point globs treated as removable
    network_fstypes: list[str] = msgspec.field(default_factory=list)  # added to the built-in list
    ignore_mounts: list[str] = msgspec.field(default_factory=list)  # mount-point globs never reported
    sync_paths: list[str] | None = None  # None: each user's Dropbox, OneDrive, Nextcloud … folders


class MountsConfig(MountPolicyConfig):
    type: str = "mounts"
    poll_interval: Duration = "30s"  # safety net: Linux announces mount changes without polling

    def __post_init__(self) -> None:
        duration(self.poll_interval, "poll_interval")


class FileWatchConfig(MountPolicyConfig):
    type: str = "file_watch"
    paths: list[str] | None = None  # None: each local user's Downloads, Desktop, Documents; CUSTOS_WATCH_PATHS wins
    watch_mounts: bool = True  # also every removable and network mount, as it appears
    exclude: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    temporary_names: list[str] = msgspec.field(default_factory=list)  # extra globs of in-progress file names
    quiet: Duration = "2s"  # a file is reported once it has had no events for this long
    unclosed_wait: Duration = "30s"  # … or, while a writer still has it open, no events for this long
    max_wait: Duration = "10m"  # … or when it has been written to for this long without a pause
    max_pending: int = 50_000  # files waiting for quiet; beyond, the oldest are reported early
    queue_size: int = 100_000  # raw events between the observer and the worker; beyond, a re-scan
    poll_interval: Duration = "10s"  # for paths watched by polling (inotify limit reached)
    supervise_interval: Duration = "10s"  # how often observers, roots and the inotify limit are checked
    rescan_interval: Duration = "15m"  # look for files changed without an event ("0" turns this off)
    mount_poll_interval: Duration = "30s"
    holder_scan_interval: Duration = "250ms"  # at most this often, look for the process writing a file
    classify: ClassifyConfig = msgspec.field(default_factory=ClassifyConfig)

    def __post_init__(self) -> None:
        for key in ("quiet", "unclosed_wait", "max_wait", "poll_interval", "supervise_interval", "rescan_interval",
                    "mount_poll_interval", "holder_scan_interval"):
            duration(getattr(self, key), key)
        if self.max_pending <= 0 or self.queue_size <= 0:
            raise ValueError("max_pending and queue_size: must be positive numbers")
