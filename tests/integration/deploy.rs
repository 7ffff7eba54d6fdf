//! The deployment (template.yaml) against the code: the HttpApi routes exactly the routes the
//! ingest and api routers serve, each to its function. The template's other properties are
//! checked by tests/deploy/template_gate.py (run by the test command).

use std::collections::BTreeSet;

/// `(METHOD, path, function)` of every route.
type Routes = BTreeSet<(String, String, &'static str)>;

fn translated_template() -> serde_json::Value {
    let python = std::env::var("EVTRACK_TEST_PYTHON").expect(
        "EVTRACK_TEST_PYTHON is not set: run the tests with `infra/dev.sh test`, which installs aws-sam-translator",
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/translate.py");
    let output = std::process::Command::new(python).arg(script).output().expect("runs the SAM translator");
    assert!(output.status.success(), "translate.py failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("translated template is JSON")
}

/// The routes of the template's HttpApi, read from its OpenAPI body, each with the function
/// its integration invokes.
fn template_routes(template: &serde_json::Value) -> Routes {
    let apis: Vec<&serde_json::Value> = template["Resources"]
        .as_object()
        .expect("resources")
        .values()
        .filter(|resource| resource["Type"] == "AWS::ApiGatewayV2::Api")
        .collect();
    assert_eq!(apis.len(), 1, "one HttpApi");
    let mut routes = Routes::new();
    for (path, methods) in apis[0]["Properties"]["Body"]["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            let integration = operation["x-amazon-apigateway-integration"]["uri"].to_string();
            let function = ["IngestFunction", "ApiFunction"]
                .into_iter()
                .find(|function| integration.contains(&format!("${{{function}.Arn}}")))
                .unwrap_or_else(|| panic!("{method} {path} invokes neither ingest nor api: {integration}"));
            routes.insert((method.to_uppercase(), path.clone(), function));
        }
    }
    routes
}

/// The routers' routes. An HttpApi route cannot end in `/`: API Gateway sends `/batch/` to
/// the `/batch` route with the slash kept in the path, so the router's `/batch/` is served
/// by the template's `/batch`.
fn code_routes() -> Routes {
    let listed = |routes: &[(http::Method, String)], function: &'static str| {
        routes
            .iter()
            .map(move |(method, path)| {
                let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
                (method.to_string(), path.to_string(), function)
            })
            .collect::<Vec<_>>()
    };
    listed(evtrack_ingest::routes().routes(), "IngestFunction")
        .into_iter()
        .chain(listed(evtrack_api::routes().routes(), "ApiFunction"))
        .collect()
}

#[test]
fn the_http_api_routes_exactly_the_routes_of_the_ingest_and_api_routers() {
    let template = template_routes(&translated_template());
    let code = code_routes();
    let missing: Vec<_> = code.difference(&template).collect();
    let extra: Vec<_> = template.difference(&code).collect();
    assert!(missing.is_empty() && extra.is_empty(), "not in template.yaml: {missing:?}\nnot in the code: {extra:?}");
    // Both functions serve something, and the browser preflight reaches ingest.
    assert!(code.len() > 60, "{} routes", code.len());
    assert!(template.contains(&("OPTIONS".into(), "/v1/batch".into(), "IngestFunction")));
}
