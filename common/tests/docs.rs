//! The AsyncAPI document in `docs/` is the one the event types describe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use common::events::schema::{asyncapi, to_yaml};

#[test]
fn docs_asyncapi_yaml_matches_the_event_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/asyncapi.yaml");
    let generated = format!(
        "# Generated from the event types in common::events by common/tests/docs.rs; do not edit.\n# Regenerate: UPDATE_DOCS=1 cargo test -p common --test docs\n{}",
        to_yaml(&asyncapi())
    );
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/asyncapi.yaml is out of date with the event types; regenerate it with \
         UPDATE_DOCS=1 cargo test -p common --test docs"
    );
}
