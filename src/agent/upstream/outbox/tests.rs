use super::*;
use crate::agent::dbfile::tests::Tmpfs;

fn ev(n: u64) -> Event {
    Event::new(EventCode::ServerProcessStarted, format!("event {n}"))
}

fn messages(o: &Outbox) -> Vec<String> {
    o.read_after(0, 100_000)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect()
}

/// Polls `f` until it holds (a loaded machine may be slow; nothing waits a fixed time).
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sequences_persist_and_acks_prune() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let epoch = {
        let o = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(o.append(&[ev(1), ev(2), ev(3)]).unwrap(), 3);
        o.ack(o.epoch(), 2).unwrap();
        assert_eq!(o.unacked(), 1);
        // An acknowledgement of another epoch is not this outbox's.
        o.ack(o.epoch() + 1, 3).unwrap();
        assert_eq!(o.unacked(), 1);
        o.epoch()
    };
    let o = Outbox::open(&path, 1 << 20).unwrap();
    assert_eq!(o.epoch(), epoch);
    assert_eq!(o.acked(), 2);
    let rest = o.read_after(o.acked(), 10).unwrap();
    assert_eq!(rest.iter().map(|e| e.sequence).collect::<Vec<_>>(), [3]);
    assert_eq!(rest[0].message, "event 3");
    assert_eq!(
        o.append(&[ev(4)]).unwrap(),
        4,
        "the sequence continues after a restart"
    );
    o.ack(epoch, 4).unwrap();
    assert!(o.read_after(0, 10).unwrap().is_empty());
    // A restart after everything was pruned still continues the sequence.
    drop(o);
    let o = Outbox::open(&path, 1 << 20).unwrap();
    assert_eq!(o.append(&[ev(5)]).unwrap(), 5);
    assert!(o.notices.lock().unwrap().is_empty(), "nothing was corrupt");
}

#[test]
fn the_bound_raises_one_alarm_and_keeps_events() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(&dir.path().join("o.redb"), 200).unwrap();
    for i in 0..10 {
        o.append(&[ev(i)]).unwrap();
    }
    assert!(o.check_full().is_some());
    assert!(o.check_full().is_none(), "one alarm per episode");
    assert_eq!(o.read_after(0, 100).unwrap().len(), 10, "nothing dropped");
    o.ack(o.epoch(), 10).unwrap();
    assert!(o.check_full().is_none());
}

/// The files in `dir` whose name starts with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

/// The one corruption notice `o` has for its writer, checked against the kept file.
fn the_notice(o: &Outbox, dir: &Path) -> String {
    let notices = o.notices.lock().unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].event_code, EventCode::UpstreamOutboxCorrupt);
    let kept = named(dir, "outbox.redb.corrupt-");
    assert_eq!(kept.len(), 1);
    assert!(
        notices[0].message.contains(&kept[0].display().to_string()),
        "{}",
        notices[0].message
    );
    notices[0].message.clone()
}

#[test]
fn a_lost_epoch_record_starts_a_new_epoch_without_the_old_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let old = {
        let o = Outbox::open(&path, 1 << 20).unwrap();
        o.append(&[ev(1), ev(2), ev(3)]).unwrap();
        o.ack(o.epoch(), 1).unwrap();
        o.epoch()
    };
    // The epoch record goes; events and the acknowledgement stay.
    {
        let db = crate::agent::dbfile::open(&path, 1 << 20).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().remove(EPOCH).unwrap();
        txn.commit().unwrap();
    }
    let o = Outbox::open(&path, 1 << 20).unwrap();
    assert_ne!(o.epoch(), old);
    assert!(messages(&o).is_empty(), "no old event under the new epoch");
    assert_eq!((o.acked(), o.unacked()), (0, 0));
    assert_eq!(
        o.append(&[ev(9)]).unwrap(),
        1,
        "the new epoch counts from 1"
    );
    let notice = the_notice(&o, dir.path());
    assert!(notice.contains("epoch record is missing"), "{notice}");
}

#[test]
fn garbage_anywhere_is_the_old_outbox_whole_or_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let (epoch, want) = {
        let o = Outbox::open(&path, 1 << 20).unwrap();
        let ledger = super::super::ledger::Ledger::open(o.file(), 0).unwrap();
        for i in 0..60 {
            o.append(&(0..20).map(|k| ev(i * 20 + k)).collect::<Vec<_>>())
                .unwrap();
            if i % 3 == 0 {
                o.ack(o.epoch(), i * 20).unwrap();
            }
            ledger.mark_running(&format!("c{i}"), i).unwrap();
        }
        (o.epoch(), messages(&o))
    };
    let good = std::fs::read(&path).unwrap();
    let (mut whole, mut replaced) = (0, 0);
    for offset in (0..good.len()).step_by(2048) {
        let _ = std::fs::remove_file(&path);
        for kept in named(dir.path(), "outbox.redb.corrupt-") {
            std::fs::remove_file(kept).unwrap();
        }
        let mut bad = good.clone();
        bad[offset..(offset + 64).min(good.len())].fill(0x5A);
        std::fs::write(&path, &bad).unwrap();
        let o = Outbox::open(&path, 1 << 20).unwrap();
        if o.epoch() == epoch {
            assert_eq!(messages(&o), want, "offset {offset}");
            assert!(o.notices.lock().unwrap().is_empty());
            whole += 1;
        } else {
            assert!(messages(&o).is_empty(), "offset {offset}");
            the_notice(&o, dir.path());
            replaced += 1;
        }
        // The ledger opens on whatever the outbox kept.
        super::super::ledger::Ledger::open(o.file(), 1).unwrap();
    }
    assert!(
        whole > 0 && replaced > 0,
        "{whole} whole, {replaced} replaced"
    );
}

#[test]
fn a_full_disk_holds_events_in_memory_and_loses_none_within_the_bound() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let o = Outbox::open(&fs.path().join("outbox.redb"), u64::MAX).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let bus = EventBus::new(100_000);
    let writer = o.clone().spawn_writer(rx, bus.clone());
    let mut committed = o.committed();
    tx.send(ev(0)).unwrap();
    wait_until("the first event", || *committed.borrow_and_update() == 1);
    let filler = fs.fill();
    // Far more than redb's spare pages: commits need the file to grow.
    let long = |n: u64| {
        Event::new(
            EventCode::ServerProcessStarted,
            format!("event {n} {}", "x".repeat(1000)),
        )
    };
    for n in 1..=2000 {
        tx.send(long(n)).unwrap();
    }
    wait_until("the write refused", || o.file().get().is_none());
    std::fs::remove_file(filler).unwrap();
    wait_until("every event written", || {
        *committed.borrow_and_update() > 2000
    });
    let stored = o.read_after(0, 100_000).unwrap();
    let numbers: Vec<u64> = stored
        .iter()
        .map(|e| e.message.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers, (0..=2000).collect::<Vec<_>>(), "all, in order");
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, e)| e.sequence == i as u64 + 1)
    );
    drop(tx);
    writer.join().unwrap();
    assert_eq!(bus.recent(0, 10).1, 0, "nothing lost, nothing to say");
}

#[test]
fn past_the_bound_events_are_dropped_counted_and_said_once() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let o = Outbox::open(&fs.path().join("outbox.redb"), u64::MAX).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let bus = EventBus::new(100_000);
    let long = |n: u64| {
        Event::new(
            EventCode::ServerProcessStarted,
            format!("event {n} {}", "x".repeat(1000)),
        )
    };
    let bound = held_size(&long(1)) * 100;
    let writer = o.clone().spawn_writer_holding(rx, bus.clone(), bound);
    let filler = fs.fill();
    for n in 1..=2000 {
        tx.send(long(n)).unwrap();
    }
    wait_until("the write refused", || o.file().get().is_none());
    std::fs::remove_file(filler).unwrap();
    let lost = || {
        bus.recent(0, 10)
            .0
            .into_iter()
            .find(|e| e.event_code == EventCode::UpstreamEventsLost)
    };
    wait_until("the loss said", || lost().is_some());
    let lost = lost().unwrap();
    drop(tx);
    writer.join().unwrap();
    let stored = o.read_after(0, 100_000).unwrap();
    let kept = stored
        .iter()
        .filter(|e| e.code == "SERVER_PROCESS_STARTED")
        .count() as u64;
    let dropped: u64 = lost.message.split(' ').next().unwrap().parse().unwrap();
    assert!(dropped > 0, "{}", lost.message);
    assert_eq!(kept + dropped, 2000, "{}", lost.message);
    assert_eq!(stored.last().unwrap().code, "UPSTREAM_EVENTS_LOST");
    assert_eq!(bus.recent(0, 10).1, 1, "said once");
}
