//! `forecourt serve` as a newcomer runs it: the embedded default on a data directory of its
//! own, demo users printed, the docs page served, a clean stop on SIGTERM, and the same
//! credentials on the next start.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    out: String,
    addr: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

fn start(data_dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_forecourt"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env("DATA_DIR", data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start forecourt serve");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let mut line = String::new();
        assert!(
            Instant::now() < deadline,
            "serve printed no docs URL: {out}"
        );
        if reader.read_line(&mut line).expect("read stdout") == 0 {
            panic!("serve exited early: {out}");
        }
        out.push_str(&line);
        if let Some(url) = line.strip_prefix("API docs:") {
            break url
                .trim()
                .trim_start_matches("http://")
                .trim_end_matches("/docs")
                .to_owned();
        }
    };
    // The rest of the banner is read too, and the pipe kept open: a server whose stdout
    // closed under it would fail on its next line.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read stdout") == 0 {
            panic!("serve exited early: {out}");
        }
        out.push_str(&line);
        if line.starts_with("Ctrl-C stops the server") {
            break;
        }
    }
    Server {
        child,
        out,
        addr,
        _stdout: reader,
    }
}

/// A plain HTTP/1.1 GET; returns status line and body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response.lines().next().unwrap_or("").to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn stop(mut server: Server) {
    let pid = server.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(exit) = server.child.try_wait().expect("wait") {
            assert!(exit.success(), "serve did not stop cleanly: {exit}");
            return;
        }
        assert!(Instant::now() < deadline, "serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_newcomer_serves_the_embedded_platform_and_gets_the_same_demo_users_next_time() {
    let dir = std::env::temp_dir().join(format!("forecourt-serve-{}", uuid::Uuid::new_v4()));
    let server = start(&dir);
    for role in [
        "admin",
        "station_owner",
        "cashier",
        "fleet_manager",
        "treasury_checker",
        "partner",
    ] {
        assert!(
            server.out.contains(role),
            "{role} missing from:\n{}",
            server.out
        );
    }
    let (status, _) = get(&server.addr, "/healthz");
    assert!(status.contains("200"), "{status}");
    let (status, page) = get(&server.addr, "/docs/");
    assert!(status.contains("200"), "{status}");
    assert!(page.contains("swagger"), "the docs page is Swagger UI");
    let (status, spec) = get(&server.addr, "/openapi.json");
    assert!(
        status.contains("200") && spec.contains("/v1/accounts"),
        "{status}"
    );
    let first = server.out.clone();
    stop(server);

    let credentials =
        std::fs::read_to_string(dir.join("demo-credentials.txt")).expect("credentials");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("demo-credentials.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the credentials file is private");
    }
    let again = start(&dir);
    assert!(
        again.out.contains(credentials.lines().nth(2).unwrap()),
        "{}",
        again.out
    );
    let users = |out: &str| {
        out.lines()
            .filter(|l| l.starts_with("  "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        users(&first),
        users(&again.out),
        "seeded once: the same users and passwords"
    );
    stop(again);
    let _ = std::fs::remove_dir_all(&dir);
}
