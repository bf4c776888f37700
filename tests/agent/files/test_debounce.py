from __future__ import annotations

import pytest

from agent.files.debounce import Debouncer, RawEvent, is_temporary_name


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **kw: object) -> Debouncer:
    return Debouncer(quiet=2.0, unclosed_wait=30.0, clock=clock, **kw)  # type: ignore[arg-type]


def ev(kind: str, path: str, dest: str = "", *, d: bool = False, synthetic: bool = False,
       polled: bool = False) -> RawEvent:
    return RawEvent(kind, path, dest, d, synthetic, polled)  # type: ignore[arg-type]


def test_a_storm_of_modify_events_becomes_one_file_once_it_is_quiet(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("created", "/h/Downloads/a.csv"))
    for _ in range(500):
        db.feed(ev("modified", "/h/Downloads/a.csv"))
        clock.advance(0.01)
        assert db.due() == []
    db.feed(ev("closed", "/h/Downloads/a.csv"))
    clock.advance(1.99)
    assert db.due() == []
    clock.advance(0.02)
    [ready] = db.due()
    assert (ready.path, ready.action) == ("/h/Downloads/a.csv", "created")
    clock.advance(60)
    assert db.due() == [] and db.pending == {}


def test_a_created_file_whose_first_write_is_slow_is_one_file_once_closed(clock: Clock) -> None:
    """A writer that takes longer than `quiet` to fill its first buffer (a report generator on a busy machine)
    still has the new file open: it is reported once, when closed, not once empty and once written."""
    db = make(clock)
    db.feed(ev("created", "/h/Downloads/report.csv"))
    clock.advance(5)
    assert db.due() == []
    db.feed(ev("modified", "/h/Downloads/report.csv"))
    db.feed(ev("closed", "/h/Downloads/report.csv"))
    clock.advance(2.1)
    [ready] = db.due()
    assert (ready.path, ready.action) == ("/h/Downloads/report.csv", "created")
    clock.advance(60)
    assert db.due() == []


def test_a_file_found_in_a_new_directory_settles_without_a_close(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("created", "/h/Downloads/newdir/found.csv", synthetic=True))
    clock.advance(2.1)
    [ready] = db.due()
    assert ready.path == "/h/Downloads/newdir/found.csv"


def test_atomic_save_is_one_created_file_under_the_final_name(clock: Clock) -> None:
    db = make(clock)
    for tmp in ("/h/Documents/lu12345.tmp", "/h/Documents/.goutputstream-AB12CD"):
        db.feed(ev("created", tmp))
        db.feed(ev("modified", tmp))
        db.feed(ev("moved", tmp, "/h/Documents/report.csv"))
        clock.advance(3)
        [ready] = db.due()
        assert (ready.path, ready.action, ready.moved_from) == ("/h/Documents/report.csv", "created", None)


def test_a_rename_before_the_file_settled_is_followed_to_its_final_name(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("created", "/h/Desktop/export.csv.new"))
    db.feed(ev("modified", "/h/Desktop/export.csv.new"))
    clock.advance(1)
    db.feed(ev("moved", "/h/Desktop/export.csv.new", "/h/Desktop/step2.csv"))
    db.feed(ev("moved", "/h/Desktop/step2.csv", "/h/Desktop/final.csv"))
    clock.advance(2.5)
    [ready] = db.due()
    assert (ready.path, ready.action, ready.first_seen) == ("/h/Desktop/final.csv", "created", 1000.0)


def test_a_browser_download_with_placeholder_and_part_file_is_one_file(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("created", "/h/Downloads/customers.xlsx"))  # Firefox's empty placeholder
    db.feed(ev("created", "/h/Downloads/customers.xlsx.part"))
    for _ in range(100):
        db.feed(ev("modified", "/h/Downloads/customers.xlsx.part"))
        clock.advance(0.05)
    db.feed(ev("moved", "/h/Downloads/customers.xlsx.part", "/h/Downloads/customers.xlsx"))
    clock.advance(2.1)
    [ready] = db.due()
    assert (ready.path, ready.action) == ("/h/Downloads/customers.xlsx", "created")


def test_a_chrome_download_through_two_crdownload_names_is_one_file(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("created", "/h/Downloads/Unconfirmed 123.crdownload"))
    db.feed(ev("modified", "/h/Downloads/Unconfirmed 123.crdownload"))
    db.feed(ev("moved", "/h/Downloads/Unconfirmed 123.crdownload", "/h/Downloads/list.csv.crdownload"))
    db.feed(ev("moved", "/h/Downloads/list.csv.crdownload", "/h/Downloads/list.csv"))
    clock.advance(3)
    assert [r.path for r in db.due()] == ["/h/Downloads/list.csv"]


def test_renaming_a_settled_file_is_reported_as_moved_with_its_old_name(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("moved", "/h/Documents/q3.csv", "/h/Documents/customers_q3.csv"))
    clock.advance(2)
    [ready] = db.due()
    assert (ready.action, ready.moved_from) == ("moved", "/h/Documents/q3.csv")


def test_a_file_deleted_before_it_settles_is_never_reported(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("created", "/h/Desktop/scratch.csv"))
    clock.advance(1)
    db.feed(ev("deleted", "/h/Desktop/scratch.csv"))
    clock.advance(5)
    assert db.due() == [] and db.pending == {}


def test_renaming_a_pending_file_to_a_backup_name_drops_it(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("modified", "/h/Documents/a.txt"))
    db.feed(ev("moved", "/h/Documents/a.txt", "/h/Documents/a.txt~"))
    clock.advance(5)
    assert db.due() == []


def test_a_file_written_without_pause_is_reported_after_max_wait(clock: Clock) -> None:
    db = make(clock, max_wait=30.0)
    for _ in range(40):
        db.feed(ev("modified", "/h/Documents/growing.log.csv"))
        clock.advance(1)
        if db.due():
            break
    assert clock.now == pytest.approx(1030.0)
    assert db.pending == {}


def test_beyond_max_pending_the_oldest_file_is_handed_out_early(clock: Clock) -> None:
    db = make(clock, max_pending=3)
    for i in range(5):
        db.feed(ev("created", f"/h/Downloads/f{i}.csv"))
    ready = db.due()
    assert [r.path for r in ready] == ["/h/Downloads/f0.csv", "/h/Downloads/f1.csv"]
    assert all(r.forced for r in ready) and db.forced == 2
    assert len(db.pending) == 3


def test_a_moved_directory_carries_its_pending_files_along(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("created", "/h/Documents/tmpdir/a.csv"))
    db.feed(ev("moved", "/h/Documents/tmpdir", "/h/Documents/export", d=True))
    db.feed(ev("moved", "/h/Documents/tmpdir/a.csv", "/h/Documents/export/a.csv", synthetic=True))
    clock.advance(3)
    [ready] = db.due()
    assert (ready.path, ready.action) == ("/h/Documents/export/a.csv", "created")


def test_settled_files_in_a_moved_directory_count_only_when_they_change_destination(clock: Clock) -> None:
    db = make(clock, crossing=lambda src, dest: "/Dropbox/" in dest)
    db.feed(ev("moved", "/h/Documents/old/a.csv", "/h/Documents/new/a.csv", synthetic=True))
    db.feed(ev("moved", "/h/Documents/old/b.csv", "/h/Dropbox/old/b.csv", synthetic=True))
    clock.advance(3)
    assert [(r.path, r.action) for r in db.due()] == [("/h/Dropbox/old/b.csv", "moved")]


def test_expire_under_hands_out_pending_files_of_a_mount_at_once(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("created", "/media/usb/a.csv"))
    db.feed(ev("created", "/home/u/b.csv"))
    assert db.expire_under("/media/usb") == 1
    [ready] = db.due()
    assert ready.path == "/media/usb/a.csv" and ready.forced


@pytest.mark.parametrize(
    "name",
    ["a.csv.part", "a.csv.crdownload", "Unconfirmed 1.crdownload", ".~lock.a.xlsx#", "~$report.xlsx",
     ".goutputstream-X1Y2Z3", "4913", ".a.csv.Ab12Cd", "tmpa1b2c3d4", "#notes.txt#", ".notes.txt.swp", "a.csv~",
     "b.xlsx.sb-12ab34cd-AbCdEf"],
)
def test_in_progress_and_helper_names_are_temporary(name: str) -> None:
    assert is_temporary_name(name)


@pytest.mark.parametrize("name", ["customers.csv", "report 2025.xlsx", "export.zip", ".hidden.csv", "tmp.csv"])
def test_names_people_save_are_not_temporary(name: str) -> None:
    assert not is_temporary_name(name)


def test_configured_globs_add_temporary_names(clock: Clock) -> None:
    db = make(clock, temporary_globs=("*.inprogress",))
    db.feed(ev("created", "/h/a.csv.inprogress"))
    db.feed(ev("moved", "/h/a.csv.inprogress", "/h/a.csv"))
    clock.advance(3)
    assert [(r.path, r.action) for r in db.due()] == [("/h/a.csv", "created")]


def test_a_file_still_open_for_writing_waits_for_its_close_through_a_long_pause(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("created", "/media/usb/big.csv"))
    db.feed(ev("modified", "/media/usb/big.csv"))
    clock.advance(20)  # the copy stalls (a slow stick, a busy machine): not finished, so not reported
    assert db.due() == []
    db.feed(ev("modified", "/media/usb/big.csv"))
    db.feed(ev("closed", "/media/usb/big.csv"))
    clock.advance(1.9)
    assert db.due() == []
    clock.advance(0.2)
    assert [r.path for r in db.due()] == ["/media/usb/big.csv"]


def test_a_writer_that_never_closes_is_reported_after_unclosed_wait(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("modified", "/h/Documents/held.csv"))
    clock.advance(29.9)
    assert db.due() == []
    clock.advance(0.2)
    assert [r.path for r in db.due()] == ["/h/Documents/held.csv"]


def test_polled_and_rescanned_changes_do_not_wait_for_a_close_they_cannot_see(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("created", "/h/polled/a.csv", polled=True))
    db.feed(ev("modified", "/h/polled/a.csv", polled=True))
    clock.advance(2.1)
    assert [r.path for r in db.due()] == ["/h/polled/a.csv"]


def test_a_file_moved_in_from_an_unwatched_place_is_complete_and_one_moved_out_is_forgotten(clock: Clock) -> None:
    db = make(clock)
    db.feed(ev("moved", "", "/h/Downloads/from-tmp.csv"))
    db.feed(ev("created", "/h/Downloads/leaving.csv"))
    db.feed(ev("moved", "/h/Downloads/leaving.csv", ""))
    db.feed(ev("created", "/h/Downloads/dir/a.csv"))
    db.feed(ev("moved", "/h/Downloads/dir", "", d=True))
    db.feed(ev("moved", "", "/h/Downloads/newdir", d=True))
    db.feed(ev("created", "/h/Downloads/newdir/b.csv", synthetic=True))
    clock.advance(2.1)
    assert [(r.path, r.action) for r in db.due()] == [("/h/Downloads/from-tmp.csv", "created"),
                                                      ("/h/Downloads/newdir/b.csv", "created")]
    assert db.pending == {}
