//! Servers from `--spawn` templates: on a socket or a port, and the ways they fail.

use super::*;

async fn launch_spawned(template: &str) -> Result<Launched, LaunchError> {
    launch(
        &spawn(template),
        FIXTURE,
        built(),
        Dialect::Standard,
        &plain(),
    )
    .await
}

#[test]
fn a_spawn_template_serves_on_a_socket_and_stops_like_a_known_server() {
    if !installed(ServerKind::Nbdkit) {
        return;
    }
    block_on(async {
        let launched = launch_spawned("nbdkit -f -r -U {socket} file {raw}")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(launched.server, "spawn:nbdkit");
        let session = open(&launched, true, &[context::BASE_ALLOCATION]).await;
        assert_eq!(session.negotiated.size, SIZE);
        session.disconnect().await;
        let (socket, pid) = (socket(&launched), launched.pid());
        assert!(pid.is_some());
        drop(launched);
        assert_gone("spawned nbdkit", &socket, pid);
    });
}

#[test]
fn a_spawn_template_can_serve_on_a_loopback_port() {
    if !installed(ServerKind::QemuNbd) {
        return;
    }
    block_on(async {
        let launched = launch_spawned(
            "qemu-nbd -f qcow2 -r -t -e 8 -x {export} -b 127.0.0.1 -p {port} {qcow2}",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let Endpoint::Tcp { host, port } = launched.target.endpoint.clone() else {
            panic!("{:?} is not TCP", launched.target.endpoint);
        };
        assert_eq!(host, "127.0.0.1");
        let session = open(&launched, true, &[context::BASE_ALLOCATION]).await;
        assert_eq!(session.negotiated.size, built().qcow2_size);
        session.disconnect().await;
        let pid = launched.pid();
        drop(launched);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            || pid.and_then(ForeignProcess::find).is_some()
        {
            assert!(
                Instant::now() < deadline,
                "qemu-nbd on port {port} outlived its stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

#[test]
fn a_spawned_server_that_exits_reports_its_output() {
    // `sh -c` prints and exits: the launch must say so, with what it printed.
    let err = block_on(launch_spawned(
        "sh -c 'echo no export for you on \"$0\" >&2; exit 3' {socket}",
    ))
    .expect_err("it exits");
    let text = err.to_string();
    assert!(text.contains("spawn:sh did not come up"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("no export for you on /"), "{text}");
}

#[test]
fn a_spawn_template_naming_no_program_is_a_clear_error() {
    let err = block_on(launch_spawned("/nonexistent/nbd-srv -U {socket} {raw}"))
        .expect_err("no such program");
    let text = err.to_string();
    assert!(
        text.contains("cannot start /nonexistent/nbd-srv: no such program"),
        "{text}"
    );
}

#[test]
fn a_spawned_server_that_forks_away_is_refused_and_named() {
    if !installed(ServerKind::Nbdkit) {
        return;
    }
    // Without -f nbdkit goes into the background: the process we start exits at once.
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("nbdkit.pid");
    let template = format!(
        "nbdkit -r -P {} -U {{socket}} file {{raw}}",
        pid_file.display()
    );
    let err = block_on(launch_spawned(&template)).expect_err("it daemonises");
    let pid: Option<i32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    // The launcher stopped the runaway; if not, stop it here and fail below.
    let left = pid.and_then(ForeignProcess::find);
    if let Some(d) = left {
        d.terminate(Duration::from_secs(2));
    }
    assert!(
        left.is_none(),
        "the daemon {pid:?} outlived the refused launch"
    );
    let daemon = pid;
    let text = err.to_string();
    assert!(text.contains("went into the background"), "{text}");
    assert!(text.contains("the harness stopped it"), "{text}");
    assert!(daemon.is_some(), "nbdkit wrote no pid file: {text}");
}
