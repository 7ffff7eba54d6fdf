//! The dashboard: a small web app at `/`, its files embedded in the binary (no build step). It
//! reads through the public API with a read key, like any other client, so these routes need
//! no key of their own and serve nothing but the app's files.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use evtrack::http::{ApiError, ListedRouter};
use http::{HeaderValue, Method, header};
use std::sync::Arc;

use crate::Api;

/// Scripts, styles and requests from this origin only; no inline script or style, no frames,
/// no forms posted anywhere. Set here, it takes the place of the API's `default-src 'none'`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct File {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! file {
    ($name:literal, $type:expr) => {
        File { name: $name, content_type: $type, body: include_bytes!(concat!("../dashboard/", $name)) }
    };
}

const INDEX: File = file!("index.html", "text/html; charset=utf-8");
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
/// Every file under `/dashboard/`; any other name is a 404.
const FILES: &[File] = &[
    file!("app.js", JS),
    file!("app.css", CSS),
    file!("uPlot.iife.min.js", JS),
    file!("uPlot.min.css", CSS),
    file!("uPlot.LICENSE", "text/plain; charset=utf-8"),
];

pub(crate) fn routes() -> ListedRouter<Arc<Api>> {
    ListedRouter::default().on(Method::GET, "/", || async { serve(&INDEX) }).on(
        Method::GET,
        "/dashboard/{file}",
        |Path(name): Path<String>| async move {
            match FILES.iter().find(|file| file.name == name) {
                Some(file) => serve(file),
                None => ApiError::not_found().into_response(),
            }
        },
    )
}

fn serve(file: &'static File) -> Response {
    let mut response = file.body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    // The files change with the binary: a browser asks again after a deploy, not for every view.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_served() {
        let index = std::str::from_utf8(INDEX.body).expect("utf-8");
        for file in FILES.iter().filter(|file| file.content_type == JS || file.content_type == CSS) {
            assert!(index.contains(&format!("/dashboard/{}", file.name)), "{} is not loaded", file.name);
        }
        assert!(!index.contains("<script>") && !index.contains("style="), "no inline script or style");
    }
}
