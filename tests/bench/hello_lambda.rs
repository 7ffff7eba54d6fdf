//! The bound of the cold-start benchmark: the smallest Rust Lambda function (the runtime and
//! an echo handler), built with the same profile as evtrack's functions.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) },
    ))
    .await
}
