//! The HTTP API's contract as docs/protocol.md states it, case by case: one status (400
//! `bad_request`) for every request the node cannot parse, and an OpenAPI document that
//! declares those statuses and the bounds the node enforces, for the node's own
//! configuration. (`openapi_fuzz.rs` checks the same at large with generated requests.)

use flowline_protocol::api::ApiErrorBody;
use flowline_protocol::ws::ErrorCode;
use flowline_server::Phase;
use serde_json::{Value, json};

use crate::util::{Node, start_with};

/// Send `req`; its status and parsed error code (None when the body is not an error).
async fn answer(req: reqwest::RequestBuilder) -> (u16, Option<ErrorCode>) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let code = serde_json::from_str::<ApiErrorBody>(&text)
        .ok()
        .map(|b| b.code);
    (status, code)
}

async fn doc(node: &Node) -> Value {
    let (status, body) = node.get_raw("/openapi.json", None).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// The statuses the document declares for `method path`.
fn declared(doc: &Value, method: &str, path: &str) -> Vec<String> {
    let responses = doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} has no responses"));
    responses.keys().cloned().collect()
}

#[tokio::test]
async fn unparseable_requests_are_400_and_declared() {
    let (node, _db) = start_with(Phase::Single, |_| {}).await;
    let me = node.user("alice").await;
    let space = node.space(&me, "guild").await;
    let ch = node.channel(&me, &space, "general", None).await;
    let c = &node.client;
    let bad = Some(ErrorCode::BadRequest);

    let signup = node.url("/auth/signup");
    let cases = [
        (
            "not JSON",
            c.post(&signup)
                .header("content-type", "application/json")
                .body("{nope"),
        ),
        (
            "no JSON content type",
            c.post(&signup)
                .header("content-type", "text/plain")
                .body(r#"{"username":"bob","password":"pw"}"#),
        ),
        (
            "no content type",
            c.post(&signup)
                .body(r#"{"username":"bob","password":"pw"}"#),
        ),
        (
            "a field missing",
            c.post(&signup).json(&json!({"username": "bob"})),
        ),
        (
            "a field of the wrong type",
            c.post(&signup)
                .json(&json!({"username": 7, "password": "pw"})),
        ),
    ];
    for (what, req) in cases {
        assert_eq!(answer(req).await, (400, bad), "{what}");
    }

    let history = |q: &str| {
        c.get(node.url(&format!("/channels/{}/messages?{q}", ch.id)))
            .bearer_auth(&me.token)
    };
    assert_eq!(answer(history("limit=-1")).await, (400, bad), "limit=-1");
    assert_eq!(
        answer(history("limit=4294967296")).await,
        (400, bad),
        "limit over u32"
    );
    assert_eq!(
        answer(history("limit=2147483648")).await.0,
        200,
        "limit over i32 is within the declared range"
    );
    assert_eq!(answer(history("before=x")).await, (400, bad), "before=x");
    let members = |id: &str| {
        c.get(node.url(&format!("/spaces/{id}/members")))
            .bearer_auth(&me.token)
    };
    assert_eq!(
        answer(members("9223372036854775808")).await,
        (400, bad),
        "id over i64"
    );
    assert_eq!(answer(members("x")).await, (400, bad), "id not a number");

    let doc = doc(&node).await;
    for (method, path, want) in [
        (
            "post",
            "/api/v1/auth/signup",
            &["201", "400", "409", "413", "503"][..],
        ),
        (
            "post",
            "/api/v1/auth/login",
            &["200", "400", "401", "413", "503"],
        ),
        (
            "get",
            "/api/v1/spaces/{id}/members",
            &["200", "400", "401", "403", "404", "503"],
        ),
        (
            "get",
            "/api/v1/channels/{id}/messages",
            &["200", "400", "401", "403", "404", "503"],
        ),
        (
            "post",
            "/api/v1/spaces/{id}/channels",
            &["201", "400", "401", "403", "404", "413", "503"],
        ),
        (
            "get",
            "/api/v1/uploads/{id}",
            &["200", "400", "401", "403", "404", "503"],
        ),
        (
            "post",
            "/api/v1/uploads",
            &["201", "400", "401", "413", "415", "503"],
        ),
    ] {
        let mut got = declared(&doc, method, path);
        got.sort();
        assert_eq!(got, want, "{method} {path}");
    }
    // No operation declares what the node never answers for a body.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                !responses.contains_key("422"),
                "{method} {path} declares 422"
            );
            if !path.ends_with("/uploads") {
                assert!(
                    !responses.contains_key("415"),
                    "{method} {path} declares 415"
                );
            }
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn document_states_the_bounds_of_this_node() {
    let (node, _db) = start_with(Phase::Single, |c| {
        c.limits.max_name_chars = 40;
        c.features.upload_types = vec!["image/png".into(), "text/*".into()];
    })
    .await;
    let doc = doc(&node).await;
    let schemas = &doc["components"]["schemas"];
    let username = &schemas["Credentials"]["properties"]["username"];
    assert_eq!(username["minLength"], 1);
    assert_eq!(username["maxLength"], 40);
    assert!(username["pattern"].as_str().unwrap().contains(r"\u0020"));
    let password = &schemas["Credentials"]["properties"]["password"];
    assert_eq!(
        (password["minLength"].clone(), password["maxLength"].clone()),
        (json!(1), json!(1024))
    );
    for schema in [
        "CreateSpace",
        "CreateChannel",
        "ProvisionSpace",
        "ProvisionChannel",
    ] {
        let name = &schemas[schema]["properties"]["name"];
        assert_eq!(
            (name["minLength"].clone(), name["maxLength"].clone()),
            (json!(1), json!(40)),
            "{schema}"
        );
        assert!(name["pattern"].is_string(), "{schema}");
    }
    assert_eq!(
        schemas["Provision"]["properties"]["username_prefix"]["maxLength"],
        39
    );
    let limit = doc["paths"]["/api/v1/channels/{id}/messages"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"]
        .clone();
    assert_eq!(limit["minimum"], 0, "{limit}");
    assert_eq!(limit["maximum"], 4294967295_u64, "{limit}");
    assert_ne!(limit["format"], "int32", "{limit}");
    let download = doc["paths"]["/api/v1/uploads/{id}"]["get"]["responses"]["200"]["content"]
        .as_object()
        .unwrap();
    let types: Vec<&String> = download.keys().collect();
    assert_eq!(types, ["image/png", "text/*"]);

    // And the node enforces exactly these bounds.
    let signup = |name: String, password: String| {
        node.client
            .post(node.url("/auth/signup"))
            .json(&json!({"username": name, "password": password}))
    };
    let at_most = "ü".repeat(40);
    let over = "ü".repeat(41);
    assert_eq!(answer(signup(at_most, "é".repeat(1024))).await.0, 201);
    assert_eq!(
        answer(signup(over, "pw".into())).await,
        (400, Some(ErrorCode::TooLong))
    );
    assert_eq!(
        answer(signup("carol".into(), "é".repeat(1025))).await,
        (400, Some(ErrorCode::TooLong))
    );
    assert_eq!(
        answer(signup("ca rol".into(), "pw".into())).await,
        (400, Some(ErrorCode::BadRequest))
    );
    node.stop().await;
}
