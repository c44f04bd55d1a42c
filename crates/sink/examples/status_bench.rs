//! The status page at scale: a number of public targets (default 10,000) with 90 days of
//! per-day rollups, the last day's hours with response-time histograms, states and incidents,
//! inserted straight into the tables (`INSERT … SELECT` over `UNNEST` and `generate_series`),
//! then requests of `/` and `/api/v1/status` through HTTP on loopback, timed one after
//! another (a number of each, default 200): the first (which reads the rollups and renders)
//! apart, then p50 and p99 of the rest, during which the page refreshes itself in the
//! background every few seconds as it does in production.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run --release -p sink --example status_bench -- 10000 200
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use monitor_core::settings::{read_definition, StatusSettings, TargetSettings};
use monitor_core::testing::TestDatabase;
use sink::catalog::Catalog;
use sink::status::rollups::Rollups;
use sink::status::{routes_of, StatusPage};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The teams the targets are spread over (one group page each).
const TEAMS: usize = 20;

/// The targets' settings: every one public, named, in a team.
fn targets(n: usize) -> Vec<TargetSettings> {
    (0..n)
        .map(|i| {
            let definition = serde_json::json!({
                "id": format!("t{i:05}"),
                "url": format!("https://t{i}.example/"),
                "name": format!("Service {i}"),
                "labels": { "team": format!("team{}", i % TEAMS) },
                "public": true,
            });
            read_definition(&definition).expect("a valid definition")
        })
        .collect()
}

/// Fills the tables: targets, states, 90 days (a down day now and then, a maintenance day
/// now and then), 24 hours with histograms, an open incident for one target in 100 and a
/// closed one for one in 10.
async fn fill(pool: &PgPool, ids: &[String]) -> Result<(), sqlx::Error> {
    let statements = [
        "INSERT INTO targets (target_id, url) SELECT id, 'https://' || id || '.example/' \
         FROM UNNEST($1::text[]) AS id",
        "INSERT INTO target_states (target_id, state, since, hour, hour_up, fold, cert_not_after) \
         SELECT id, 'up', now() - interval '3 days', date_trunc('hour', now()), 20, '{}', \
           now() + interval '60 days' FROM UNNEST($1::text[]) AS id",
        "INSERT INTO verdict_days (target_id, day, up, degraded, down, unknown, maintenance) \
         SELECT id, (now() AT TIME ZONE 'UTC')::date - d, \
           CASE WHEN (n + d) % 89 = 0 THEN 1380 ELSE 1440 - ((n + d) % 37 = 0)::int * 30 END, \
           ((n + d) % 23 = 0)::int * 10, ((n + d) % 37 = 0)::int * 30, 0, \
           ((n + d) % 89 = 0)::int * 60 \
         FROM UNNEST($1::text[]) WITH ORDINALITY AS u(id, n), generate_series(1, 89) AS d",
        "INSERT INTO verdict_hours (target_id, hour, up, response) \
         SELECT id, date_trunc('hour', now()) - make_interval(hours => h), 60, \
           ARRAY(SELECT CASE WHEN b BETWEEN 26 + n % 8 AND 30 + n % 8 THEN 12 ELSE 0 END \
                 FROM generate_series(0, 40) AS b) \
         FROM UNNEST($1::text[]) WITH ORDINALITY AS u(id, n), generate_series(1, 24) AS h",
        "INSERT INTO incidents (incident_id, target_id, kind, opened_at, detected_at, closed_at, \
           cause_class, regions, checks_failed) \
         SELECT gen_random_uuid(), id, 'down', now() - interval '2 days', \
           now() - interval '2 days', CASE WHEN n % 100 = 0 THEN NULL \
           ELSE now() - interval '47 hours' END, 'timeout', ARRAY['eu-west'], 3 \
         FROM UNNEST($1::text[]) WITH ORDINALITY AS u(id, n) WHERE n % 10 = 0",
    ];
    for sql in statements {
        sqlx::query(sql).bind(ids).execute(pool).await?;
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}

/// One GET of `path`: the time to the last byte and the body's size.
async fn get(port: u16, path: &str) -> (Duration, usize) {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut body = Vec::new();
    s.read_to_end(&mut body).await.expect("read");
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{path} answered {:?}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    (started.elapsed(), body.len())
}

/// Times `n` requests of `path` after a first one; prints the figures.
async fn time(port: u16, path: &str, n: usize) {
    let (first, bytes) = get(port, path).await;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        times.push(get(port, path).await.0);
    }
    times.sort();
    let at = |q: f64| times[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    println!(
        "{path:<16} {bytes:>10} bytes  first {:>8.1} ms  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        ms(first),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
}

/// How long requests are timed while the snapshot refreshes in the background.
const BUSY: Duration = Duration::from_secs(20);

/// Times the reads of a refresh: the first (everything) and the next (what can change).
async fn time_refreshes(pool: &PgPool, ids: &[String]) {
    let mut rollups = Rollups::default();
    for what in ["full read", "refresh"] {
        let started = Instant::now();
        rollups
            .refresh(pool, ids, Utc::now())
            .await
            .expect("the rollups read");
        println!("rollups {what:<10} {:>8.1} ms", ms(started.elapsed()));
    }
}

/// Requests `path` one after another for `busy`, across background refreshes; prints p50,
/// p99 and the largest.
async fn while_refreshing(port: u16, path: &str, busy: Duration) {
    let started = Instant::now();
    let mut times = Vec::new();
    while started.elapsed() < busy {
        times.push(get(port, path).await.0);
    }
    times.sort();
    let n = times.len();
    let at = |q: f64| times[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    println!(
        "{path:<16} {n} requests over {busy:?} of background refreshes: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let requests: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(200)
        .max(1);
    let db = TestDatabase::create().await;
    let pool = PgPool::connect(&db.url).await.expect("connect");
    sink::db::migrate(&pool).await.expect("migrations apply");
    let targets = targets(n);
    let ids: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
    let filled = Instant::now();
    fill(&pool, &ids).await.expect("the tables fill");
    println!(
        "{n} public targets × 90 days filled in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    time_refreshes(&pool, &ids).await;
    let catalog = Catalog {
        targets: targets.clone(),
    };
    let (_catalog, catalog_rx) = watch::channel(Arc::new(catalog));
    let page = Arc::new(StatusPage::new(
        pool.clone(),
        catalog_rx,
        &StatusSettings::default(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move { axum::serve(listener, routes_of(page)).await });
    for path in ["/", "/api/v1/status", "/group/team/team3"] {
        time(port, path, requests).await;
    }
    while_refreshing(port, "/", BUSY).await;
    server.abort();
    pool.close().await;
    db.drop_database().await;
}
