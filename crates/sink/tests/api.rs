//! The targets API against a real sink, PostgreSQL and broker: every route, validation
//! errors naming each field, refusals by token, the audit, and every change on the targets
//! topic in order; and the OpenAPI document held to the route table.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use hyper::{Method, StatusCode};
use monitor_core::testing::{create_topic, kafka_client, unique_name, TestDatabase};
use monitor_core::Status;
use rskafka::client::partition::UnknownTopicHandling;
use serde_json::{json, Value};
use support::api::{admin, call, sink_on, Answer, ADMIN, READER};
use support::slot_report;

/// The settings file's target: `from-file`, of team ops.
const FILE_TARGETS: &str =
    r#"[{ id = "from-file", url = "http://127.0.0.1:9/", labels = { team = "ops" } }]"#;

/// The schema of `name` in the OpenAPI document, for validating answers.
fn schema_validator(name: &str) -> jsonschema::Validator {
    let doc: Value = serde_json::from_str(sink::api::OPENAPI).expect("the document is JSON");
    let schema =
        json!({"$ref": format!("#/components/schemas/{name}"), "components": doc["components"]});
    jsonschema::validator_for(&schema).expect("a valid schema")
}

fn assert_valid(validator: &jsonschema::Validator, value: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{value} does not match the OpenAPI schema: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn every_route_answers_as_documented_and_changes_are_audited() {
    let db = TestDatabase::create().await;
    let (sink, addr, _, _dir) = sink_on(&db, &unique_name("api"), FILE_TARGETS).await;
    let target_schema = schema_validator("Target");

    // Create: 201, Location, ETag "1", the definition with its id.
    let created = admin(
        addr,
        Method::POST,
        "/api/v1/targets",
        Some(json!({
            "id": "shop", "url": "https://shop.example/health", "name": "Shop", "period": "30s",
            "labels": {"team": "web", "env": "prod"}, "public": true,
            "headers": {"Authorization": "Bearer s3cret-value", "X-Team": "web"}
        })),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.headers["location"], "/api/v1/targets/shop");
    assert_eq!(created.headers["etag"], "\"1\"");
    assert_valid(&target_schema, &created.json);
    assert_eq!(
        created.json["definition"]["headers"]["Authorization"],
        "(secret)"
    );
    assert!(
        !created.text.contains("s3cret-value"),
        "a secret was answered: {}",
        created.text
    );
    let second = admin(
        addr,
        Method::POST,
        "/api/v1/targets",
        Some(json!({"url": "http://api.example/"})),
    )
    .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    let derived = second.json["id"].as_str().expect("an id").to_string();

    // Duplicate id and file ids: 409.
    let dup = admin(
        addr,
        Method::POST,
        "/api/v1/targets",
        Some(json!({"id": "shop", "url": "http://x/"})),
    )
    .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let file = admin(
        addr,
        Method::PATCH,
        "/api/v1/targets/from-file",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(file.status, StatusCode::CONFLICT);
    assert!(file.json["error"]
        .as_str()
        .unwrap_or_default()
        .contains("settings file"));

    // Every problem at once, named by field: 422.
    let invalid = admin(
        addr,
        Method::POST,
        "/api/v1/targets",
        Some(json!({
            "url": "ftp://x/", "period": "1s", "timeout": "5s", "labels": {"": "x"}, "colour": "red"
        })),
    )
    .await;
    assert_eq!(
        invalid.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        invalid.text
    );
    assert_valid(&schema_validator("Error"), &invalid.json);
    let fields: BTreeSet<&str> = invalid.json["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["field"].as_str())
        .collect();
    for field in ["url", "timeout", "colour"] {
        assert!(
            fields.contains(field),
            "{field} not named: {}",
            invalid.text
        );
    }
    let not_json = call(
        addr,
        Method::POST,
        "/api/v1/targets",
        Some(ADMIN),
        Some("{url"),
        &[],
    )
    .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);

    // Read, list with filters and pages.
    let read = call(
        addr,
        Method::GET,
        "/api/v1/targets/shop",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_valid(&target_schema, &read.json);
    assert_eq!(read.json["state"]["state"], "unknown");
    let from_file = call(
        addr,
        Method::GET,
        "/api/v1/targets/from-file",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(from_file.json["source"], "file");
    assert_valid(&target_schema, &from_file.json);
    let ids = |a: &Answer| -> Vec<String> {
        a.json["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .map(|t| t["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let all = call(
        addr,
        Method::GET,
        "/api/v1/targets",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_valid(&schema_validator("TargetList"), &all.json);
    let mut expected = vec![derived.clone(), "from-file".to_string(), "shop".to_string()];
    expected.sort();
    assert_eq!(ids(&all), expected);
    let web = call(
        addr,
        Method::GET,
        "/api/v1/targets?label=team=web",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(ids(&web), ["shop"]);
    let ops = call(
        addr,
        Method::GET,
        "/api/v1/targets?label=team=ops",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(ids(&ops), ["from-file"]);
    let text = call(
        addr,
        Method::GET,
        "/api/v1/targets?q=SHOP.EXAMPLE",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(ids(&text), ["shop"]);
    let down = call(
        addr,
        Method::GET,
        "/api/v1/targets?state=down",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(ids(&down), Vec::<String>::new());
    let page = call(
        addr,
        Method::GET,
        "/api/v1/targets?limit=2",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(ids(&page), expected[..2]);
    let next = page.json["next"].as_str().expect("a next page").to_string();
    let rest = call(
        addr,
        Method::GET,
        &format!("/api/v1/targets?limit=2&after={next}"),
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(ids(&rest), expected[2..]);
    assert!(rest.json["next"].is_null());
    let bad = call(
        addr,
        Method::GET,
        "/api/v1/targets?limit=0&state=sideways",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Patch: merge, the secret kept, the version raised; If-Match of an old version: 412.
    let patched = call(
        addr,
        Method::PATCH,
        "/api/v1/targets/shop",
        Some(ADMIN),
        Some(&json!({"labels": {"env": null}, "period": "20s"}).to_string()),
        &[("if-match", "\"1\"")],
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.json["version"], 2);
    assert_eq!(patched.json["definition"]["labels"], json!({"team": "web"}));
    let stale = call(
        addr,
        Method::PATCH,
        "/api/v1/targets/shop",
        Some(ADMIN),
        Some(r#"{"name": "late"}"#),
        &[("if-match", "\"1\"")],
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let stored: Value =
        sqlx::query_scalar("SELECT definition FROM api_targets WHERE target_id = 'shop'")
            .fetch_one(&support::pool(&db).await)
            .await
            .expect("stored");
    assert_eq!(stored["headers"]["Authorization"], "Bearer s3cret-value");
    assert_eq!(stored["period"], "20s");

    // Replace (and create through PUT), delete.
    let replaced = admin(
        addr,
        Method::PUT,
        "/api/v1/targets/shop",
        Some(json!({"url": "https://shop.example/v2"})),
    )
    .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(
        replaced.json["definition"],
        json!({"id": "shop", "url": "https://shop.example/v2"})
    );
    let other_id = admin(
        addr,
        Method::PUT,
        "/api/v1/targets/shop",
        Some(json!({"id": "else", "url": "http://x/"})),
    )
    .await;
    assert_eq!(other_id.status, StatusCode::UNPROCESSABLE_ENTITY);
    let put_new = admin(
        addr,
        Method::PUT,
        "/api/v1/targets/blog",
        Some(json!({"url": "https://blog.example/"})),
    )
    .await;
    assert_eq!(put_new.status, StatusCode::CREATED);
    let deleted = admin(addr, Method::DELETE, "/api/v1/targets/blog", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = call(
        addr,
        Method::GET,
        "/api/v1/targets/blog",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let again = admin(addr, Method::DELETE, "/api/v1/targets/blog", None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // The audit: who, what, before and after, secrets redacted.
    let changes = call(
        addr,
        Method::GET,
        "/api/v1/targets/shop/changes",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_valid(&schema_validator("ChangeList"), &changes.json);
    let list = changes.json["changes"].as_array().expect("changes");
    let actions: Vec<&str> = list.iter().filter_map(|c| c["action"].as_str()).collect();
    assert_eq!(actions, ["create", "patch", "replace"]);
    assert!(list.iter().all(|c| c["actor"] == "deploy-bot"));
    assert_eq!(list[1]["before"]["period"], "30s");
    assert_eq!(list[1]["after"]["period"], "20s");
    assert!(
        !changes.text.contains("s3cret-value"),
        "a secret is in the audit: {}",
        changes.text
    );
    let blog = call(
        addr,
        Method::GET,
        "/api/v1/targets/blog/changes",
        Some(READER),
        None,
        &[],
    )
    .await;
    let blog_actions: Vec<&str> = blog.json["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["action"].as_str())
        .collect();
    assert_eq!(blog_actions, ["replace", "delete"]);

    // Refusals: no token, an unknown one, a read token changing.
    let count_changes = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM target_changes")
            .fetch_one(&support::pool(&db).await)
            .await
            .expect("count")
    };
    let before = count_changes().await;
    assert_eq!(
        before, 6,
        "two creations, a patch, two replacements, a deletion"
    );
    let none = call(addr, Method::GET, "/api/v1/targets", None, None, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.headers["www-authenticate"]
        .to_str()
        .unwrap_or_default()
        .starts_with("Bearer"));
    let unknown = call(
        addr,
        Method::GET,
        "/api/v1/targets",
        Some("not-a-token-0123456789"),
        None,
        &[],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let reader = call(
        addr,
        Method::DELETE,
        "/api/v1/targets/shop",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(reader.status, StatusCode::FORBIDDEN);
    assert_eq!(
        count_changes().await,
        before,
        "refused requests changed nothing"
    );

    // The document itself, unauthenticated.
    let doc = call(addr, Method::GET, "/api/v1/openapi.json", None, None, &[]).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.json["openapi"], "3.1.0");

    // Every route of the table is served (the fallback answers 404 with no JSON, a wrong
    // method 405), deletion last.
    let mut routes = sink::api::ROUTES.to_vec();
    routes.sort_by_key(|(m, _)| *m == "DELETE");
    for (method, path) in routes {
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let answer = admin(
            addr,
            method.clone(),
            &path.replace("{id}", "shop"),
            Some(json!({})),
        )
        .await;
        assert_ne!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(
            !answer.json.is_null() || answer.status == StatusCode::NO_CONTENT,
            "{method} {path} is not served: {}",
            answer.status
        );
    }

    sink.stop().await.expect("the sink stops cleanly");
    db.drop_database().await;
}

/// The records of the targets topic, key and value, read until `count` arrived.
async fn topic_records(topic: &str, count: usize) -> Vec<(String, Option<Value>)> {
    let client = kafka_client().await;
    let partition = client
        .partition_client(topic.to_string(), 0, UnknownTopicHandling::Retry)
        .await
        .expect("the targets topic exists");
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while records.len() < count && tokio::time::Instant::now() < deadline {
        let (batch, _) = partition
            .fetch_records(records.len() as i64, 1..1_000_000, 200)
            .await
            .expect("fetch");
        for r in batch {
            let key = String::from_utf8(r.record.key.unwrap_or_default()).expect("a UTF-8 key");
            let value = r
                .record
                .value
                .map(|v| serde_json::from_slice(&v).expect("JSON"));
            records.push((key, value));
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn every_change_reaches_the_targets_topic_in_order() {
    let db = TestDatabase::create().await;
    let (sink, addr, targets_topic, _dir) = sink_on(&db, &unique_name("api"), FILE_TARGETS).await;
    let started = tokio::time::Instant::now();
    let made = admin(
        addr,
        Method::POST,
        "/api/v1/targets",
        Some(json!({
            "id": "a", "url": "http://a.example/", "headers": {"Authorization": "Bearer k"}
        })),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED);
    let first = topic_records(&targets_topic, 1).await;
    println!(
        "first change on the topic {:?} after the request",
        started.elapsed()
    );
    assert_eq!(first.len(), 1);
    admin(
        addr,
        Method::PATCH,
        "/api/v1/targets/a",
        Some(json!({"period": "2m", "timeout": "5s"})),
    )
    .await;
    admin(
        addr,
        Method::POST,
        "/api/v1/targets",
        Some(json!({"id": "b", "url": "http://b.example/"})),
    )
    .await;
    let deleted = admin(addr, Method::DELETE, "/api/v1/targets/a", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    let records = topic_records(&targets_topic, 4).await;
    let keys: Vec<&str> = records.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(keys, ["a", "a", "b", "a"]);
    // The checkers get the secret (they send it); a deletion is a tombstone.
    assert_eq!(
        records[0].1.as_ref().expect("a value")["headers"]["Authorization"],
        "Bearer k"
    );
    assert_eq!(records[1].1.as_ref().expect("a value")["period"], "2m");
    assert_eq!(records[2].1.as_ref().expect("a value")["id"], "b");
    assert!(records[3].1.is_none(), "a deletion is a tombstone");
    support::wait_for(
        &support::pool(&db).await,
        "SELECT count(*) FROM target_outbox",
        0,
        Duration::from_secs(10),
        "the outbox emptied",
    )
    .await;

    sink.stop().await.expect("the sink stops cleanly");
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_target_made_through_the_api_is_judged_by_its_own_rules() {
    let db = TestDatabase::create().await;
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let (sink, addr, _, _dir) = sink_on(&db, &topic, FILE_TARGETS).await;
    // One region of two fails slot 5: by default (majority of the regions, down after 3
    // slots) nothing; for "strict", made through the API with quorum any and down after 1,
    // an incident.
    let made = admin(addr, Method::POST, "/api/v1/targets", Some(json!({
        "id": "strict", "url": "http://strict.example/", "quorum": "any", "down_after": 1, "up_after": 1
    }))).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let start = chrono::Utc::now() - chrono::Duration::minutes(10);
    let mut values = Vec::new();
    for target in ["strict", "loose"] {
        for k in 0..12 {
            for region in ["eu", "us"] {
                let down = k == 5 && region == "eu";
                let status = if down { Status::Down } else { Status::Up };
                values.push((
                    Some(target.as_bytes().to_vec()),
                    Some(slot_report(target, region, start, k, status).to_json()),
                ));
            }
        }
    }
    support::produce_messages(&client, &topic, 0, values).await;
    let pool = support::pool(&db).await;
    support::wait_for_offsets(&pool, &topic, 48, Duration::from_secs(30)).await;
    let incidents = support::text_rows(
        &pool,
        "SELECT target_id || '|' || kind FROM incidents ORDER BY 1",
    )
    .await;
    assert_eq!(incidents, ["strict|down"]);

    sink.stop().await.expect("the sink stops cleanly");
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_public_target_made_through_the_api_joins_the_status_page_and_leaves_it_when_deleted() {
    let db = TestDatabase::create().await;
    let (sink, addr, _, _dir) = sink_on(&db, &unique_name("api"), FILE_TARGETS).await;
    let status_ids = || async {
        let answer = call(addr, Method::GET, "/api/v1/status", None, None, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let targets = answer.json["targets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        targets
            .iter()
            .filter_map(|t| t["id"].as_str().map(String::from))
            .collect::<Vec<_>>()
    };
    let wait_for_ids = |expected: Vec<&'static str>| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ids = status_ids().await;
            if ids == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the status shows {ids:?}, not {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    for (id, public) in [("open", true), ("hidden", false)] {
        let made = admin(
            addr,
            Method::POST,
            "/api/v1/targets",
            Some(json!({
                "id": id, "url": format!("https://{id}.example/"), "public": public
            })),
        )
        .await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    }
    wait_for_ids(vec!["open"]).await;
    let badge = call(
        addr,
        Method::GET,
        "/badge/hidden/status.svg",
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(
        badge.status,
        StatusCode::NOT_FOUND,
        "a target not public has no badge"
    );
    let deleted = admin(addr, Method::DELETE, "/api/v1/targets/open", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    wait_for_ids(vec![]).await;

    sink.stop().await.expect("the sink stops cleanly");
    db.drop_database().await;
}

/// The first `sh` block of the README's "Targets API" section.
fn readme_api_commands() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("the README");
    let section = readme
        .split("### Targets API")
        .nth(1)
        .expect("a Targets API section");
    let block = section.split("```sh\n").nth(1).expect("an sh block");
    block
        .split("```")
        .next()
        .expect("the block's end")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn the_readme_api_commands_run_as_written() {
    let db = TestDatabase::create().await;
    let (sink, addr, _, _dir) = sink_on(&db, &unique_name("api"), FILE_TARGETS).await;
    let commands = readme_api_commands();
    assert!(commands.contains("curl"), "{commands}");
    let ran = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &commands])
        .env("WEBMON_API", format!("http://{addr}"))
        .env("WEBMON_TOKEN", ADMIN)
        .output()
        .await
        .expect("bash runs");
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "the README's commands failed: {}\n{out}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let actions = support::text_rows(
        &support::pool(&db).await,
        "SELECT action FROM target_changes WHERE target_id = 'shop' ORDER BY change_id",
    )
    .await;
    assert_eq!(actions, ["create", "patch", "delete"], "{out}");
    assert!(out.contains("\"request_id\""), "check now answered: {out}");

    sink.stop().await.expect("the sink stops cleanly");
    db.drop_database().await;
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_the_api_serves() {
    let doc: Value = serde_json::from_str(sink::api::OPENAPI).expect("the document is JSON");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = sink::api::ROUTES
        .iter()
        .chain(sink::status::API_ROUTES)
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, served,
        "schemas/openapi.json and sink::api::ROUTES differ"
    );
}
