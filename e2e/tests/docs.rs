//! `docs/api.md` and `README.md` are generated, in part, from the code: the route
//! tables from each service's OpenAPI document, the events from their payload types,
//! the flow diagram from the services' listeners. This test fails when they drift;
//! `UPDATE_DOCS=1 cargo test -p e2e --test docs` rewrites them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fmt::Write as _;

use bus::OnBus as _;
use common::events::Subject;
use common::events::schema::payload_schema;
use serde_json::Value;
use utoipa::OpenApi;

/// Replaces the text between `<!-- generated: NAME -->` and `<!-- end generated -->`.
fn fill(document: &str, name: &str, content: &str) -> String {
    let start = format!("<!-- generated: {name} -->\n");
    let end = "<!-- end generated -->";
    let from = document
        .find(&start)
        .unwrap_or_else(|| panic!("no `{start}` marker"))
        + start.len();
    let to = from + document[from..].find(end).unwrap();
    format!("{}{content}{}", &document[..from], &document[to..])
}

fn routes(openapi: &utoipa::openapi::OpenApi) -> String {
    let doc = serde_json::to_value(openapi).unwrap();
    let mut table = String::from("| route | answers |\n|---|---|\n");
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let summary = operation["summary"]
                .as_str()
                .unwrap_or_default()
                .replace('\n', " ");
            let answers: Vec<String> = operation["responses"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(status, response)| {
                    format!(
                        "{status} {}",
                        response["description"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            writeln!(
                table,
                "| `{} {path}`<br>{summary} | {} |",
                method.to_uppercase(),
                answers.join("<br>")
            )
            .unwrap();
        }
    }
    table
}

fn type_of(schema: &Value) -> String {
    let base = match &schema["type"] {
        Value::String(kind) => kind.clone(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "object".into(),
    };
    match (&schema["format"], &schema["enum"]) {
        (_, Value::Array(values)) => values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", "),
        (Value::String(format), _) => format!("{base} ({format})"),
        _ => base,
    }
}

fn fields(schema: &Value, prefix: &str, table: &mut String) {
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, field) in schema["properties"].as_object().unwrap() {
        let path = format!("{prefix}{name}");
        let optional = if required.contains(name.as_str()) {
            ""
        } else {
            " (optional)"
        };
        let description = field["description"]
            .as_str()
            .unwrap_or_default()
            .replace('\n', " ");
        writeln!(
            table,
            "| `{path}`{optional} | {} | {description} |",
            type_of(field)
        )
        .unwrap();
        if field["properties"].is_object() {
            fields(field, &format!("{path}."), table);
        }
    }
}

fn events() -> String {
    let mut text = String::new();
    for subject in Subject::ALL {
        let schema = payload_schema(subject);
        writeln!(text, "### `{subject}`\n").unwrap();
        writeln!(
            text,
            "{} Published by **{}**; consumed by {}.\n",
            schema["description"].as_str().unwrap_or_default(),
            subject.publisher(),
            subject
                .consumers()
                .iter()
                .map(|c| format!("**{c}**"))
                .collect::<Vec<_>>()
                .join(", ")
        )
        .unwrap();
        writeln!(text, "{}\n", subject.effects()).unwrap();
        text.push_str("| field | type | |\n|---|---|---|\n");
        fields(&schema, "", &mut text);
        text.push('\n');
    }
    text
}

/// The services, their databases, and who publishes and consumes each event.
fn flow() -> String {
    let mut diagram = String::from(
        "```mermaid\nflowchart LR\n  browser([browser]) --> ingress[ingress]\n  ingress -->|/| client[client]\n  client -.->|API calls| ingress\n",
    );
    for (service, path) in [
        ("auth", "/api/users"),
        ("tickets", "/api/tickets"),
        ("orders", "/api/orders"),
        ("payments", "/api/payments"),
    ] {
        writeln!(diagram, "  ingress -->|{path}| {service}").unwrap();
    }
    for service in ["auth", "tickets", "orders", "payments", "expiration"] {
        writeln!(
            diagram,
            "  {service}[{service}] --- {service}_db[({service} db)]"
        )
        .unwrap();
    }
    diagram.push_str("  payments --> stripe([Stripe])\n");
    for subject in Subject::ALL {
        let node = subject.as_str().replace('.', "_");
        writeln!(diagram, "  {node}{{{{{subject}}}}}").unwrap();
        writeln!(diagram, "  {} --> {node}", subject.publisher()).unwrap();
        for consumer in subject.consumers() {
            writeln!(diagram, "  {node} --> {consumer}").unwrap();
        }
    }
    diagram.push_str("```\n");
    diagram
}

fn check(path: &str, generated: String) {
    let file = testkit::workspace_root().join(path);
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&file, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&file).unwrap();
    assert!(
        committed == generated,
        "{path} is out of date with the code; regenerate it with \
         UPDATE_DOCS=1 cargo test -p e2e --test docs"
    );
}

#[test]
fn docs_api_md_matches_the_openapi_documents_and_the_event_types() {
    let file = testkit::workspace_root().join("docs/api.md");
    let mut document = std::fs::read_to_string(&file).unwrap();
    for (area, openapi) in [
        ("auth", auth::routes::ApiDoc::openapi()),
        ("tickets", tickets::routes::ApiDoc::openapi()),
        ("orders", orders::routes::ApiDoc::openapi()),
        ("payments", payments::routes::ApiDoc::openapi()),
    ] {
        document = fill(&document, &format!("routes {area}"), &routes(&openapi));
    }
    document = fill(&document, "events", &events());
    check("docs/api.md", document);
}

#[test]
fn readme_flow_diagram_matches_the_events() {
    let file = testkit::workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&file).unwrap();
    check("README.md", fill(&readme, "flow", &flow()));
}

#[test]
fn each_subject_is_consumed_by_the_services_that_listen_to_it() {
    let listening: [(&str, Vec<Subject>); 4] = [
        ("tickets", tickets::Config::listeners().subjects()),
        ("orders", orders::Config::listeners().subjects()),
        ("payments", payments::Config::listeners().subjects()),
        ("expiration", expiration::Config::listeners().subjects()),
    ];
    for subject in Subject::ALL {
        let actual: Vec<&str> = listening
            .iter()
            .filter(|(_, subjects)| subjects.contains(&subject))
            .map(|(service, _)| *service)
            .collect();
        let mut documented = subject.consumers().to_vec();
        documented.sort_unstable();
        let mut actual = actual;
        actual.sort_unstable();
        assert_eq!(actual, documented, "consumers of {subject}");
    }
}
