//! The OpenAPI document: checked in, complete, and honest about every operation.

use serde_json::Value;

fn spec() -> Value {
    serde_json::to_value(api::openapi()).expect("spec")
}

#[test]
fn the_checked_in_openapi_document_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/openapi.json");
    let checked_in = std::fs::read_to_string(path).expect("openapi/openapi.json is checked in");
    assert!(
        checked_in == api::openapi_json(),
        "openapi/openapi.json is stale: run `cargo run -p forecourt -- openapi` and commit it"
    );
}

#[test]
fn every_post_but_login_documents_the_idempotency_key_and_every_operation_its_errors() {
    let spec = spec();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let name = format!("{} {path}", method.to_uppercase());
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            // The bank's callbacks and the channels' notifications carry their sender's
            // signature and are applied idempotently as they are.
            let signed_by_sender = path == "/v1/treasury/bank/callbacks"
                || path.starts_with("/v1/payments/notifications/");
            if method == "post" && path != "/v1/auth/login" && !signed_by_sender {
                assert!(
                    params.contains(&"Idempotency-Key"),
                    "{name} does not document Idempotency-Key"
                );
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{name} has no success response"
            );
            if path.starts_with("/v1/") {
                for status in ["401", "500"] {
                    if name == "POST /v1/auth/login" && status == "401" {
                        continue;
                    }
                    assert!(
                        responses.contains_key(status),
                        "{name} does not document {status}"
                    );
                }
                assert!(
                    op["security"].is_array(),
                    "{name} states no security requirement"
                );
                assert!(op["tags"].is_array(), "{name} has no tag");
            }
        }
    }
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let signature = schemes["partner_signature"]["description"]
        .as_str()
        .unwrap();
    assert!(signature.contains("FORECOURT-HMAC-SHA256"), "{signature}");
}

#[test]
fn the_problem_types_are_stable_uris() {
    for kind in api::error::ProblemKind::ALL {
        assert_eq!(
            kind.type_uri(),
            format!("urn:forecourt:problem:{}", kind.slug())
        );
        assert!(
            kind.slug()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-')
        );
    }
}
