//! The pool: one server per key, shared by concurrent cases, started again when it died.

use super::*;

#[test]
fn the_pool_shares_one_server_and_shuts_all_down() {
    let pool = Pool::default();
    let kinds: Vec<ServerKind> = ServerKind::ALL
        .into_iter()
        .filter(|k| installed(*k))
        .collect();
    let mut stopped = Vec::new();
    block_on(async {
        for &kind in &kinds {
            let first = pooled(&pool, kind, Dialect::Standard).await;
            let second = pooled(&pool, kind, Dialect::Standard).await;
            assert!(Arc::ptr_eq(&first, &second), "{}", kind.name());
            stopped.push((kind, socket(&first), first.pid()));
        }
        let draft = pooled(&pool, ServerKind::Reference, Dialect::Draft).await;
        let standard = pooled(&pool, ServerKind::Reference, Dialect::Standard).await;
        assert!(!Arc::ptr_eq(&draft, &standard));
        stopped.push((ServerKind::Reference, socket(&draft), None));
    });
    // Cases run on their own runtimes: the pooled servers outlive the one that started them.
    block_on(async {
        for &kind in &kinds {
            let launched = pooled(&pool, kind, Dialect::Standard).await;
            let structured = kind != ServerKind::NbdServer;
            open(&launched, structured, &[]).await.disconnect().await;
        }
    });
    pool.shutdown_all();
    for (kind, socket, pid) in &stopped {
        assert_gone(kind.name(), socket, *pid);
    }
    pool.shutdown_all();
}

#[test]
fn many_cases_asking_at_once_get_one_server() {
    let pool = Arc::new(Pool::default());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                block_on(pooled(&pool, ServerKind::Reference, Dialect::Standard))
            })
        })
        .collect();
    let launched: Vec<Arc<Launched>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(launched.iter().all(|l| Arc::ptr_eq(l, &launched[0])));
    let socket = socket(&launched[0]);
    pool.shutdown_all();
    assert_gone("reference", &socket, None);
}

#[test]
fn faulty_reference_servers_are_pooled_apart_and_still_replay_writes() {
    let pool = Pool::default();
    let faults = [Fault::DirtyMapMissingWrite];
    block_on(async {
        let clean = pooled(&pool, ServerKind::Reference, Dialect::Standard).await;
        let reference = ServerKind::Reference.into();
        let (once, twice) = (
            Behaviour::faults(&faults),
            Behaviour::faults(&[faults[0], faults[0]]),
        );
        let faulty = pool.get(&reference, FIXTURE, built(), Dialect::Standard, &once);
        let faulty = faulty.await.unwrap();
        assert!(!Arc::ptr_eq(&clean, &faulty));
        let again = pool.get(&reference, FIXTURE, built(), Dialect::Standard, &twice);
        let again = again.await.unwrap();
        assert!(Arc::ptr_eq(&faulty, &again), "one server per set of faults");
        // The fixture's writes were replayed (WRITE replies are never faulty), but the faulty
        // bitmap denies them while the clean one shows them.
        let bitmap = format!("{}bm0", context::QEMU_DIRTY_BITMAP_PREFIX);
        let dirty = |reply: crate::client::Reply| {
            reply
                .status_chunks()
                .flat_map(|(_, d)| d.to_vec())
                .any(|d| d.flags & context::STATE_DIRTY != 0)
        };
        for (server, expect_dirty) in [(&clean, true), (&faulty, false)] {
            let mut s = open(server, true, &[&bitmap]).await;
            let reply = s.block_status(0, s.negotiated.size, 0).await.unwrap();
            assert_eq!(dirty(reply), expect_dirty);
            s.disconnect().await;
        }
    });
    pool.shutdown_all();
}

#[test]
fn spawned_servers_are_pooled_per_template() {
    if !installed(ServerKind::Nbdkit) {
        return;
    }
    let pool = Pool::default();
    block_on(async {
        let a = spawn("nbdkit -f -r -U {socket} file {raw}");
        let b = spawn("nbdkit -f -r -U {socket} --filter=noextents file {raw}");
        let mut got = Vec::new();
        for l in [&a, &a, &b] {
            let launched = pool
                .get(l, FIXTURE, built(), Dialect::Standard, &plain())
                .await;
            got.push(launched.unwrap_or_else(|e| panic!("{e}")));
        }
        let [a1, a2, b1] = &got[..] else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(a1, a2));
        assert!(!Arc::ptr_eq(a1, b1));
        assert_ne!(a1.target, b1.target);
        pool.shutdown_all();
    });
}

#[test]
fn a_pooled_server_that_died_is_started_again() {
    if !installed(ServerKind::Nbdkit) {
        return;
    }
    let pool = Pool::default();
    block_on(async {
        let first = pooled(&pool, ServerKind::Nbdkit, Dialect::Standard).await;
        let pid = first.pid().expect("nbdkit runs in a process");
        // What a crash looks like from outside: the process is gone.
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while first.is_running() {
            assert!(Instant::now() < deadline, "nbdkit {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
        let second = pooled(&pool, ServerKind::Nbdkit, Dialect::Standard).await;
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(second.is_running());
        let session = open(&second, true, &[context::BASE_ALLOCATION]).await;
        assert_eq!(session.negotiated.size, SIZE);
        session.disconnect().await;
        // A live server is shared, as before.
        let third = pooled(&pool, ServerKind::Nbdkit, Dialect::Standard).await;
        assert!(Arc::ptr_eq(&second, &third));
        pool.shutdown_all();
    });
}
