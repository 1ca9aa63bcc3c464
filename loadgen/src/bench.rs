//! Every measurement of `make bench`, in one run on one machine: the ceilings (a bare
//! axum handler, PostgreSQL through pgbench, JetStream's acknowledged publishes) and
//! ours against them, event propagation, expiration lateness, memory and start-up.
//! HTTP throughput is measured with wrk (`-t2`, three alternating runs, the median
//! kept), so the load generator is never the bottleneck.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::fanout;
use crate::journeys::{self, Kind};
use crate::stack::{SERVICES, Stack};
use crate::stats::{self, Recorder, histogram_of};

/// How long each wrk or pgbench run lasts.
const RUN: &str = "5";
const ROUNDS: usize = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub name: String,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Every run's rate (the reported one is their median).
    pub runs: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delays {
    pub name: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// For expirations: how far apart the orders' due times were.
    pub spread_ms: f64,
}

/// A backlog of `ticket.created` events drained into the orders replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backlog {
    pub events: u64,
    /// From the commit until the relay had published every event (its outbox empty).
    pub drained_s: f64,
    /// From the first event in the orders replica to the last.
    pub replicated_s: f64,
    /// `events` / `replicated_s`.
    pub per_second: f64,
    /// The relay's own rate: the events it published after it first deleted a batch,
    /// over the time from then until the outbox was empty (its poll's wait left out).
    /// Absent from runs before it was measured.
    #[serde(default)]
    pub relay_per_second: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Memory {
    pub service: String,
    pub idle_kb: u64,
    pub peak_kb: u64,
    pub after_burst_kb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub date: String,
    pub machine: String,
    pub http: Vec<Throughput>,
    pub ceilings: Vec<Throughput>,
    pub propagation: Vec<Delays>,
    pub lateness: Delays,
    /// What one expiry cost every process; absent from runs before it was measured.
    #[serde(default)]
    pub expiry_cost: Option<fanout::Cost>,
    /// Absent from the results of runs before it was measured.
    #[serde(default)]
    pub backlog: Option<Backlog>,
    pub memory: Vec<Memory>,
    pub startup_ms: BTreeMap<String, f64>,
    pub journeys: Throughput,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn combine(name: &str, runs: &[Throughput]) -> Throughput {
    Throughput {
        name: name.to_owned(),
        per_second: median(runs.iter().map(|r| r.per_second).collect()),
        p50_ms: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|r| r.p99_ms).collect()),
        runs: runs.iter().map(|r| r.per_second).collect(),
    }
}

/// `12.34us` / `1.20ms` / `2.00s` → milliseconds.
fn wrk_time(text: &str) -> Option<f64> {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_alphabetic())?);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => return None,
    })
}

/// One wrk run: `connections` connections on two threads.
fn wrk(
    name: &str,
    url: &str,
    connections: u32,
    headers: &[String],
    script: Option<&str>,
) -> anyhow::Result<Throughput> {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{RUN}s"),
        "--latency",
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(script) = script {
        command.args(["-s", script]);
    }
    let output = command
        .arg(url)
        .output()
        .context("running wrk (apt install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix).map(str::trim))
            .map(str::to_owned)
    };
    let per_second: f64 = field("Requests/sec:")
        .context("wrk printed no rate")?
        .parse()?;
    let p50 = field("50%").and_then(|t| wrk_time(&t)).unwrap_or_default();
    let p99 = field("99%").and_then(|t| wrk_time(&t)).unwrap_or_default();
    let errors = field("Non-2xx or 3xx responses:");
    if let Some(errors) = errors {
        bail!("{name}: wrk saw {errors} failed answers");
    }
    Ok(Throughput {
        name: name.to_owned(),
        per_second,
        p50_ms: p50,
        p99_ms: p99,
        runs: vec![per_second],
    })
}

/// One pgbench run of `script` against `database`.
fn pgbench(
    stack: &Stack,
    name: &str,
    database: &str,
    clients: u32,
    script: &str,
    vars: &[String],
) -> anyhow::Result<Throughput> {
    let file = std::env::temp_dir().join(format!("bench-{}.sql", Uuid::new_v4().simple()));
    std::fs::write(&file, script)?;
    let mut command = Command::new(pgbench_bin()?);
    command.args([
        "-h",
        "127.0.0.1",
        "-p",
        &stack.pg_port.to_string(),
        "-U",
        "postgres",
        "-n",
        "-M",
        "prepared",
        "-c",
        &clients.to_string(),
        "-j",
        "2",
        "-T",
        RUN,
        "-f",
    ]);
    command.arg(&file);
    for var in vars {
        command.args(["-D", var]);
    }
    let output = command.arg(database).output()?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let tps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .context("pgbench printed no tps")?
        .parse()?;
    let average: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("latency average = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    Ok(Throughput {
        name: name.to_owned(),
        per_second: tps,
        p50_ms: average,
        p99_ms: 0.0,
        runs: vec![tps],
    })
}

fn pgbench_bin() -> anyhow::Result<String> {
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")?
        .flatten()
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|p| p.display().to_string())
        .context("pgbench is not installed")
}

/// The bare axum handler, as a process of its own.
struct Hello(std::process::Child, u16);

impl Hello {
    fn start(stack: &Stack) -> anyhow::Result<Self> {
        // A port the kernel has just found free: a fixed one may be held by any
        // outgoing connection's ephemeral port (it was, once: "Address already in use").
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let binary = stack.root().join("target/release/hello");
        let mut child = Command::new(&binary)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited at once ({status}) on port {port}",
                binary.display()
            );
        }
        Ok(Self(child, port))
    }
}

impl Drop for Hello {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn memory(stack: &Stack, field: &str) -> BTreeMap<String, u64> {
    SERVICES
        .iter()
        .filter_map(|(name, _)| Some(((*name).to_owned(), stack.memory_kb(name, field).ok()?)))
        .collect()
}

pub async fn run(stack: &Stack) -> anyhow::Result<Results> {
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = memory(stack, "VmRSS").await;

    // A user, a few tickets, and tables for pgbench.
    let api = crate::client::Api::new(&stack.ingress(), Recorder::default())?;
    let cookie = api
        .sign_up(&format!("bench-{}@bench.test", Uuid::new_v4().simple()))
        .await?;
    let mut ticket_id = String::new();
    for n in 0..100 {
        let ticket = api.sell(&cookie, &format!("Bench {n}"), "10").await?;
        ticket_id = ticket["id"].as_str().unwrap_or_default().to_owned();
    }
    let tickets_db = sqlx::PgPool::connect(&stack.database("tickets")).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_insert (LIKE tickets INCLUDING ALL)")
        .execute(&tickets_db)
        .await?;

    let auth = stack.service("auth")?;
    let auth_ops = stack.ops("auth")?;
    let tickets = stack.service("tickets")?;
    let cookie_header = format!("Cookie: {cookie}");
    let post_script = std::env::temp_dir().join("bench-post-ticket.lua");
    std::fs::write(
        &post_script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{{\"title\":\"bench\",\"price\":10}}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Cookie\"] = \"{cookie}\"\n"
        ),
    )?;
    let post_script = post_script.display().to_string();
    let hello = Hello::start(stack)?;
    let hello_url = format!("http://127.0.0.1:{}/", hello.1);

    // Alternating rounds: each subject next to its ceiling.
    let mut runs: BTreeMap<&str, Vec<Throughput>> = BTreeMap::new();
    let select =
        "SELECT id, title, price_cents, user_id, version, order_id FROM tickets WHERE id = :id;\n";
    let list = "SELECT id, title, price_cents, user_id, version, order_id FROM tickets \
                WHERE order_id IS NULL ORDER BY created_at DESC, id DESC LIMIT 20;\n";
    let insert = "INSERT INTO bench_insert (id, title, price_cents, user_id) \
                  VALUES (gen_random_uuid(), 'bench', 1000, gen_random_uuid());\n";
    for round in 0..ROUNDS {
        println!("bench: HTTP round {}/{ROUNDS}", round + 1);
        let mut push = |name, result: anyhow::Result<Throughput>| -> anyhow::Result<()> {
            runs.entry(name).or_default().push(result?);
            Ok(())
        };
        push("hello", wrk("hello", &hello_url, 64, &[], None))?;
        push(
            "GET /healthz",
            wrk(
                "GET /healthz",
                &format!("{auth_ops}/healthz"),
                64,
                &[],
                None,
            ),
        )?;
        push(
            "GET /api/users/currentuser",
            wrk(
                "GET /api/users/currentuser",
                &format!("{auth}/api/users/currentuser"),
                64,
                std::slice::from_ref(&cookie_header),
                None,
            ),
        )?;
        push(
            "pgbench select by id",
            pgbench(
                stack,
                "pgbench select by id",
                "tickets",
                64,
                select,
                &[format!("id={ticket_id}")],
            ),
        )?;
        push(
            "GET /api/tickets/{id}",
            wrk(
                "GET /api/tickets/{id}",
                &format!("{tickets}/api/tickets/{ticket_id}"),
                64,
                &[],
                None,
            ),
        )?;
        push(
            "pgbench list page",
            pgbench(stack, "pgbench list page", "tickets", 64, list, &[]),
        )?;
        push(
            "GET /api/tickets?limit=20",
            wrk(
                "GET /api/tickets?limit=20",
                &format!("{tickets}/api/tickets?limit=20"),
                64,
                &[],
                None,
            ),
        )?;
    }
    drop(hello);
    // Writes apart from reads: each POST leaves events for the other services to
    // handle, which would otherwise eat into the next measurement's CPU.
    for round in 0..ROUNDS {
        println!("bench: write round {}/{ROUNDS}", round + 1);
        quiesce(stack).await?;
        runs.entry("pgbench insert").or_default().push(pgbench(
            stack,
            "pgbench insert",
            "tickets",
            16,
            insert,
            &[],
        )?);
        quiesce(stack).await?;
        runs.entry("POST /api/tickets").or_default().push(wrk(
            "POST /api/tickets",
            &format!("{tickets}/api/tickets"),
            16,
            &[],
            Some(&post_script),
        )?);
    }
    let combined: BTreeMap<&str, Throughput> =
        runs.iter().map(|(k, v)| (*k, combine(k, v))).collect();
    let ceilings_names = [
        "hello",
        "pgbench select by id",
        "pgbench list page",
        "pgbench insert",
    ];
    let mut ceilings: Vec<Throughput> = ceilings_names
        .iter()
        .filter_map(|n| combined.get(n).cloned())
        .collect();
    ceilings.extend(jetstream_publish_rates(stack).await?);
    // The local stack's NATS store is on this machine's disk; the cluster's is not.
    if stack.cluster.is_none() {
        ceilings.push(disk_sync_rate(stack.state_dir().join("nats")).await?);
    }
    let mut http_results: Vec<Throughput> = combined
        .iter()
        .filter(|(name, _)| !ceilings_names.contains(name))
        .map(|(_, t)| t.clone())
        .collect();

    quiesce(stack).await?;
    println!("bench: POST /api/orders and expiration lateness");
    let (orders, lateness, expiry_cost) = orders_and_lateness(stack, &http).await?;
    http_results.push(orders);

    quiesce(stack).await?;
    println!("bench: a backlog of {BACKLOG} ticket.created");
    let backlog = Some(backlog(stack, BACKLOG).await?);

    println!("bench: event propagation");
    let mut propagation = Vec::new();
    for rate in [200.0, 1000.0] {
        quiesce(stack).await?;
        propagation.push(propagate(stack, &http, &cookie, rate, Duration::from_secs(10)).await?);
    }

    quiesce(stack).await?;
    println!("bench: purchase journeys");
    let journeys = journeys::run(journeys::Config {
        base: stack.ingress(),
        rate: None,
        concurrency: 32,
        duration: Duration::from_secs(15),
        count: None,
        users: 40,
        only: Some(Kind::Purchase),
        stop: None,
    })
    .await?;
    let journey_time = journeys
        .journey_times
        .first()
        .cloned()
        .context("no journey ran")?;
    let journeys = Throughput {
        name: "purchase journeys".into(),
        per_second: journey_time.per_second,
        p50_ms: journey_time.p50_ms,
        p99_ms: journey_time.p99_ms,
        runs: vec![journey_time.per_second],
    };

    let peak = memory(stack, "VmHWM").await;
    println!("bench: waiting for the services to settle after the burst");
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = memory(stack, "VmRSS").await;
    let memory = idle
        .iter()
        .map(|(service, idle_kb)| Memory {
            service: service.clone(),
            idle_kb: *idle_kb,
            peak_kb: peak.get(service).copied().unwrap_or_default(),
            after_burst_kb: after.get(service).copied().unwrap_or_default(),
        })
        .collect();

    println!("bench: start-up times");
    let mut startup_ms = BTreeMap::new();
    for (service, _) in SERVICES {
        startup_ms.insert(service.to_owned(), startup(stack, service).await?);
    }

    Ok(Results {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        machine: machine(),
        http: http_results,
        ceilings,
        propagation,
        lateness,
        expiry_cost,
        backlog,
        memory,
        startup_ms,
        journeys,
    })
}

/// Waits until every event of the previous measurement has been handled.
async fn quiesce(stack: &Stack) -> anyhow::Result<()> {
    let started = Instant::now();
    crate::invariants::quiesce(stack, Duration::from_secs(300)).await?;
    println!("bench: settled in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    format!("{cores} cores ({model})")
}

/// The bus's best publishing, in two ceilings, each 20,000 events of the relay's size
/// to a scratch stream on the stack's NATS (file storage, `sync_interval: always`, as
/// the events' stream): acknowledged publishes with 256 in flight, and atomic batches
/// of 256 one after another, each acknowledged once (what the relay does with an
/// outbox batch).
async fn jetstream_publish_rates(stack: &Stack) -> anyhow::Result<[Throughput; 2]> {
    use async_nats::header::{self, HeaderMap};
    use async_nats::jetstream::{self, message::PublishMessage, stream};
    const COUNT: u32 = 20_000;
    const IN_FLIGHT: usize = 256;
    let client = stack.nats_client().await?;
    let js = jetstream::new(client.clone());
    let _ = js.delete_stream("BENCH").await;
    js.create_stream(stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        storage: stream::StorageType::File,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await?;
    let payload =
        bytes::Bytes::from_static(br#"{"id":"00000000-0000-0000-0000-000000000000","version":0}"#);
    let rate = |name: &str, elapsed: Duration| {
        let rate = f64::from(COUNT) / elapsed.as_secs_f64();
        Throughput {
            name: name.into(),
            per_second: rate,
            p50_ms: 0.0,
            p99_ms: 0.0,
            runs: vec![rate],
        }
    };

    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for n in 0..COUNT {
        let message = PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("pipelined-{n}"));
        pending.push_back(js.send_publish("bench.events", message).await?);
        if pending.len() >= IN_FLIGHT
            && let Some(ack) = pending.pop_front()
        {
            ack.await?;
        }
    }
    for ack in pending {
        ack.await?;
    }
    let pipelined = rate(crate::report::JETSTREAM_PUBLISH, started.elapsed());

    let started = Instant::now();
    let ids: Vec<u32> = (0..COUNT).collect();
    for (batch, chunk) in ids.chunks(IN_FLIGHT).enumerate() {
        let batch_id = format!("bench-{batch}");
        for (place, n) in (1..).zip(chunk) {
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_MESSAGE_ID, format!("atomic-{n}"));
            headers.insert(header::NATS_BATCH_ID, batch_id.as_str());
            headers.insert(header::NATS_BATCH_SEQUENCE, place.to_string());
            if place == chunk.len() {
                headers.insert(header::NATS_BATCH_COMMIT, "1");
                let commit = PublishMessage::build()
                    .payload(payload.clone())
                    .headers(headers);
                let ack = js.send_publish("bench.events", commit).await?.await?;
                anyhow::ensure!(
                    ack.batch_size == Some(u64::try_from(chunk.len())?),
                    "the bench's atomic batch {batch_id} was not committed whole: {ack:?}"
                );
            } else {
                client
                    .publish_with_headers("bench.events", headers, payload.clone())
                    .await?;
            }
        }
    }
    let atomic = rate(crate::report::JETSTREAM_ATOMIC, started.elapsed());
    js.delete_stream("BENCH").await?;
    Ok([pipelined, atomic])
}

/// The ceiling under every bus figure: how many 200-byte appends a second one writer
/// makes durable (`fdatasync` after each) on the disk that holds NATS's store, as a
/// stream with `sync_interval: always` does at the least. 3 s, in a scratch file beside
/// the store.
async fn disk_sync_rate(dir: std::path::PathBuf) -> anyhow::Result<Throughput> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let path = dir.join("bench-fdatasync.scratch");
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let record = [b'x'; 200];
        let started = Instant::now();
        let mut count = 0_u32;
        while started.elapsed() < Duration::from_secs(3) {
            file.write_all(&record)?;
            file.sync_data()?;
            count += 1;
        }
        let elapsed = started.elapsed();
        drop(file);
        std::fs::remove_file(&path)?;
        let rate = f64::from(count) / elapsed.as_secs_f64();
        Ok(Throughput {
            name: crate::report::DISK_SYNC.into(),
            per_second: rate,
            p50_ms: 1000.0 / rate,
            p99_ms: 0.0,
            runs: vec![rate],
        })
    })
    .await?
}

/// Lists tickets at `rate` per second for `duration` (straight to the tickets service),
/// then reads, from the databases, when each was committed and when it reached the
/// orders replica.
/// Bench's event propagation alone, at `rate` tickets a second, as a new user.
pub(crate) async fn propagation(stack: &Stack, rate: f64) -> anyhow::Result<Delays> {
    let api = crate::client::Api::new(&stack.ingress(), Recorder::default())?;
    let cookie = api
        .sign_up(&format!(
            "propagation-{}@bench.test",
            Uuid::new_v4().simple()
        ))
        .await?;
    propagate(
        stack,
        &reqwest::Client::new(),
        &cookie,
        rate,
        Duration::from_secs(10),
    )
    .await
}

async fn propagate(
    stack: &Stack,
    http: &reqwest::Client,
    cookie: &str,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Delays> {
    let url = format!("{}/api/tickets", stack.service("tickets")?);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    while Instant::now() < deadline {
        ticker.tick().await;
        let (http, url, cookie) = (http.clone(), url.clone(), cookie.to_owned());
        tasks.push(tokio::spawn(async move {
            let response = http
                .post(url)
                .header("cookie", cookie)
                .json(&json!({"title": "propagation", "price": 10}))
                .send()
                .await?;
            let ticket: serde_json::Value = response.json().await?;
            ticket["id"]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok())
                .context("no ticket id")
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await??);
    }
    let tickets = sqlx::PgPool::connect(&stack.database("tickets")).await?;
    let orders = sqlx::PgPool::connect(&stack.database("orders")).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let replicated: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(&orders)
            .await?;
        if usize::try_from(replicated).unwrap_or(0) == ids.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {replicated} of {} tickets were replicated", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let committed: BTreeMap<Uuid, chrono::DateTime<chrono::Utc>> =
        sqlx::query("SELECT id, created_at FROM tickets WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&tickets)
            .await?
            .iter()
            .map(|row| (row.get("id"), row.get("created_at")))
            .collect();
    let delays: Vec<i64> = sqlx::query("SELECT id, replicated_at FROM tickets WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&orders)
        .await?
        .iter()
        .filter_map(|row| {
            let at: chrono::DateTime<chrono::Utc> = row.get("replicated_at");
            let id: Uuid = row.get("id");
            Some((at - *committed.get(&id)?).num_microseconds().unwrap_or(0))
        })
        .collect();
    let summary = stats::summary("", &histogram_of(delays), 0, duration);
    Ok(Delays {
        name: format!("{rate:.0} tickets/s"),
        count: summary.count,
        p50_ms: summary.p50_ms,
        p99_ms: summary.p99_ms,
        max_ms: summary.max_ms,
        spread_ms: 0.0,
    })
}

/// The events of the backlog measurement.
pub const BACKLOG: usize = 10_000;

/// `count` tickets listed in one transaction with their `ticket.created` events,
/// written straight into tickets' database (one statement, as if that many sales had
/// committed at once), then timed on their way: until the relay has published them all,
/// and from the first to the last in the orders replica, which is the consumer's rate.
pub(crate) async fn backlog(stack: &Stack, count: usize) -> anyhow::Result<Backlog> {
    let tickets = sqlx::PgPool::connect(&stack.database("tickets")).await?;
    let orders = sqlx::PgPool::connect(&stack.database("orders")).await?;
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::new_v4()).collect();
    let committed: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "WITH listed AS (
             INSERT INTO tickets (id, title, price_cents, user_id, version)
             SELECT id, 'backlog', 1000, $2, 0 FROM unnest($1::uuid[]) AS id
             RETURNING id, title, user_id
         ), queued AS (
             INSERT INTO outbox (event_id, subject, payload)
             SELECT gen_random_uuid(), 'ticket.created',
                    json_build_object('id', id, 'version', 0, 'title', title, 'price', 10,
                                      'userId', user_id)
             FROM listed
         )
         SELECT now()",
    )
    .bind(&ids)
    .bind(Uuid::new_v4())
    .fetch_one(&tickets)
    .await
    .context("writing the backlog")?;
    let deadline = Instant::now() + Duration::from_secs(300);
    // When the relay first deleted a published batch, and how many were left then.
    let mut started: Option<(chrono::DateTime<chrono::Utc>, i64)> = None;
    let drained = loop {
        let (left, at): (i64, chrono::DateTime<chrono::Utc>) =
            sqlx::query_as("SELECT count(*), clock_timestamp() FROM outbox")
                .fetch_one(&tickets)
                .await?;
        if started.is_none() && left < count as i64 {
            started = Some((at, left));
        }
        if left == 0 {
            break at;
        }
        if Instant::now() > deadline {
            bail!("{left} events still in tickets' outbox after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (first, last) = loop {
        let (replicated, first, last): (
            i64,
            Option<chrono::DateTime<chrono::Utc>>,
            Option<chrono::DateTime<chrono::Utc>>,
        ) = sqlx::query_as(
            "SELECT count(*), min(replicated_at), max(replicated_at) FROM tickets WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&orders)
        .await?;
        if usize::try_from(replicated).unwrap_or(0) == count {
            break (first.context("no first")?, last.context("no last")?);
        }
        if Instant::now() > deadline {
            bail!("only {replicated} of {count} tickets in the orders replica after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seconds = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
        (to - from).num_microseconds().unwrap_or(0) as f64 / 1e6
    };
    let replicated_s = seconds(first, last);
    Ok(Backlog {
        events: count as u64,
        drained_s: seconds(committed, drained),
        replicated_s,
        per_second: count as f64 / replicated_s.max(1e-3),
        relay_per_second: started
            .filter(|(at, left)| *left > 0 && *at < drained)
            .map(|(at, left)| left as f64 / seconds(at, drained)),
    })
}

/// 1,000 tickets ordered flat out (64 at a time, straight to the orders service): the
/// ordering's throughput and latency, then, as the stack's expiration window runs
/// out, how late after `expiresAt` each order was cancelled.
pub(crate) async fn orders_and_lateness(
    stack: &Stack,
    http: &reqwest::Client,
) -> anyhow::Result<(Throughput, Delays, Option<fanout::Cost>)> {
    const COUNT: usize = 1000;
    const IN_FLIGHT: usize = 64;
    let api = crate::client::Api::new(&stack.ingress(), Recorder::default())?;
    let seller = api
        .sign_up(&format!("seller-{}@bench.test", Uuid::new_v4().simple()))
        .await?;
    // One buyer per request in flight: a user's orders are placed one at a time (the
    // cap on unpaid orders locks the user), so one buyer would measure that lock, not
    // the endpoint.
    let signing = Semaphore::new(8);
    let buyers: Vec<String> = join_all((0..IN_FLIGHT).map(|_| {
        let (api, signing) = (&api, &signing);
        async move {
            let _slot = signing.acquire().await;
            api.sign_up(&format!("buyer-{}@bench.test", Uuid::new_v4().simple()))
                .await
        }
    }))
    .await
    .into_iter()
    .collect::<anyhow::Result<_>>()?;
    let slots = Semaphore::new(32);
    let tickets: Vec<String> = join_all((0..COUNT).map(|n| {
        let (api, seller, slots) = (&api, &seller, &slots);
        async move {
            let _slot = slots.acquire().await;
            let ticket = api.sell(seller, &format!("Due {n}"), "10").await?;
            ticket["id"]
                .as_str()
                .map(str::to_owned)
                .context("no ticket id")
        }
    }))
    .await
    .into_iter()
    .collect::<anyhow::Result<_>>()?;
    let orders_db = sqlx::PgPool::connect(&stack.database("orders")).await?;
    let ids: Vec<Uuid> = tickets
        .iter()
        .filter_map(|t| Uuid::parse_str(t).ok())
        .collect();
    loop {
        let replicated: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(&orders_db)
            .await?;
        if usize::try_from(replicated).unwrap_or(0) == COUNT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let url = format!("{}/api/orders", stack.service("orders")?);
    let recorder = Recorder::default();
    let slots = Semaphore::new(IN_FLIGHT);
    let started = Instant::now();
    let orders: Vec<Uuid> = join_all(tickets.iter().enumerate().map(|(n, ticket)| {
        let (http, url, recorder, slots) = (http, &url, &recorder, &slots);
        let buyer = &buyers[n % IN_FLIGHT];
        async move {
            let _slot = slots.acquire().await;
            let sent = Instant::now();
            let response = http
                .post(url)
                .header("cookie", buyer)
                .json(&json!({"ticketId": ticket}))
                .send()
                .await?;
            let ok = response.status() == reqwest::StatusCode::CREATED;
            let order: serde_json::Value = response.json().await?;
            recorder.record("POST /api/orders", sent.elapsed(), ok);
            order["id"]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok())
                .with_context(|| format!("ordering failed: {order}"))
        }
    }))
    .await
    .into_iter()
    .collect::<anyhow::Result<_>>()?;
    let elapsed = started.elapsed();
    let ordering = recorder.summaries(elapsed).pop().context("no orders")?;

    // The fan-out's cost: an idle second just before the first order comes due (the
    // consequences of placing them long settled), then from there to the last
    // cancellation.
    fanout::enable(&orders_db).await?;
    let first_due: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("/* loadgen */ SELECT min(expires_at) FROM orders WHERE id = ANY($1)")
            .bind(&orders)
            .fetch_one(&orders_db)
            .await?;
    let until_due = (first_due - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    let idle_length = Duration::from_secs(1);
    let idle = if until_due > idle_length + Duration::from_millis(300) {
        tokio::time::sleep(until_due - idle_length - Duration::from_millis(300)).await;
        Some(fanout::idle(&orders_db, idle_length).await?)
    } else {
        None
    };
    let expiring = fanout::snapshot(&orders_db).await?;

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let cancelled: i64 = sqlx::query_scalar(
            "/* loadgen */ SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'cancelled'",
        )
        .bind(&orders)
        .fetch_one(&orders_db)
        .await?;
        if usize::try_from(cancelled).unwrap_or(0) == COUNT {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {cancelled} of {COUNT} orders expired");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each expiry's last consequences (tickets freeing the ticket, the replicas in
    // orders and payments) follow the cancellation; wait until they are in.
    let tickets_db = sqlx::PgPool::connect(&stack.database("tickets")).await?;
    let payments_db = sqlx::PgPool::connect(&stack.database("payments")).await?;
    loop {
        let reserved: i64 = sqlx::query_scalar(
            "/* loadgen */ SELECT count(*) FROM tickets WHERE id = ANY($1) AND order_id IS NOT NULL",
        )
        .bind(&ids)
        .fetch_one(&tickets_db)
        .await?;
        let replicated: i64 = sqlx::query_scalar(
            "/* loadgen */ SELECT count(*) FROM tickets WHERE id = ANY($1) AND version >= 2",
        )
        .bind(&ids)
        .fetch_one(&orders_db)
        .await?;
        let paid_side: i64 = sqlx::query_scalar(
            "/* loadgen */ SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'cancelled'",
        )
        .bind(&orders)
        .fetch_one(&payments_db)
        .await?;
        if reserved == 0
            && usize::try_from(replicated).unwrap_or(0) == COUNT
            && usize::try_from(paid_side).unwrap_or(0) == COUNT
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("{reserved} tickets still reserved after every order expired");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired = fanout::snapshot(&orders_db).await?;
    let cost = idle.map(|idle| fanout::cost(&idle, &expiring, &expired, COUNT as u64));
    let rows = sqlx::query(
        "SELECT (extract(epoch FROM updated_at - expires_at) * 1e6)::bigint AS late,
                (extract(epoch FROM expires_at) * 1e3)::float8 AS due
         FROM orders WHERE id = ANY($1)",
    )
    .bind(&orders)
    .fetch_all(&orders_db)
    .await?;
    let late: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>("late")).collect();
    let due: Vec<f64> = rows.iter().map(|r| r.get::<f64, _>("due")).collect();
    let spread =
        due.iter().copied().fold(f64::MIN, f64::max) - due.iter().copied().fold(f64::MAX, f64::min);
    let lateness = stats::summary("", &histogram_of(late), 0, elapsed);
    Ok((
        Throughput {
            name: "POST /api/orders".into(),
            per_second: ordering.per_second,
            p50_ms: ordering.p50_ms,
            p99_ms: ordering.p99_ms,
            runs: vec![ordering.per_second],
        },
        Delays {
            name: format!("{COUNT} orders due together"),
            count: lateness.count,
            p50_ms: lateness.p50_ms,
            p99_ms: lateness.p99_ms,
            max_ms: lateness.max_ms,
            spread_ms: spread,
        },
        cost,
    ))
}

/// From exec to `/readyz` answering 200: the service is stopped, started by hand with
/// the stack's environment, timed, stopped again and given back to the stack.
async fn startup(stack: &Stack, service: &str) -> anyhow::Result<f64> {
    let env = stack.service_env(service)?;
    stack.script(&["stop", service])?;
    let binary = stack.root().join("target/release").join(service);
    let ready = format!("{}/readyz", stack.ops(service)?);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()?;
    let started = Instant::now();
    let mut child = Command::new(&binary)
        .env_clear()
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let took = loop {
        if http
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{service} was not ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    stack.script(&["start", service])?;
    Ok(took.as_secs_f64() * 1000.0)
}
