//! The HTTP API (version 1) over the Unix socket: axum routes that parse a request, queue
//! it for the worker and turn its answer into JSON with the right status.
//!
//! Every error is `{"message": "..."}`: 400 for a malformed request (bad JSON, unknown
//! fields, wrong types, bad values: axum's own 422 for a body that does not fit the type is
//! turned into 400, since the request is simply wrong), 404 for an unknown container,
//! network namespace or route, 405 for a wrong method, 409 for a conflict with the state,
//! 413 for a body over [`api::MAX_BODY`], 500 for a host failure (with the error chain), 503
//! when the worker is gone.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use netcore::handlers::ErrorKind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use super::service::{Command, Job, Reply, ServiceError};
use crate::api;

#[derive(Debug, Clone)]
struct App {
    tx: mpsc::Sender<Job>,
}

/// The API's routes, sending jobs to `tx`.
pub fn router(tx: mpsc::Sender<Job>) -> Router {
    let p = |path: &str| format!("{}/{path}", api::PREFIX);
    Router::new()
        .route(&p("allocate_interface"), post(allocate_interface))
        .route(&p("release_interface"), post(release_interface))
        .route(&p("allocate_port"), post(allocate_port))
        .route(&p("release_port"), post(release_port))
        .route(&p("link"), post(link))
        .route(&p("attach"), post(attach))
        .route(&p("detach"), post(detach))
        .route(&p("state"), get(state))
        .route(&p("health"), get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(api::MAX_BODY))
        .layer(middleware::from_fn(log_request))
        .with_state(App { tx })
}

/// The status of an error.
pub fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::BadInput(_) => StatusCode::BAD_REQUEST,
        ServiceError::Handler(h) => match h.kind() {
            ErrorKind::BadInput => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
        },
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Conflict(_) => StatusCode::CONFLICT,
        ServiceError::Host(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(api::ErrorReply { message })).into_response()
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

/// The body as `T`, or the error's status and message: 413 when over the limit, 400
/// otherwise.
pub fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, (StatusCode, String)> {
    let bytes = body.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            (
                status,
                format!(
                    "request body too large: the limit is {} bytes",
                    api::MAX_BODY
                ),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {}", r.body_text()),
            )
        }
    })?;
    let bad = |e: String| {
        (
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    };
    // serde's derived structs also accept a JSON array of the fields in order
    // (`["c1"]` would be an allocate_interface for c1): the API takes objects only. Checked
    // on the first byte so that serde still parses the object itself (and still refuses
    // duplicate fields, which a detour through serde_json::Value would silently merge).
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(b'[') => return Err(bad("expected a JSON object, got an array".into())),
        Some(_) => {}
    }
    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
}

impl App {
    async fn call(&self, cmd: Command) -> Result<Reply, ServiceError> {
        let gone = || ServiceError::Unavailable("dockerd-net is shutting down".to_owned());
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { cmd, reply }).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    async fn serve<T>(&self, body: Result<Bytes, BytesRejection>) -> Response
    where
        T: DeserializeOwned,
        Command: TryFrom<T, Error = ServiceError>,
    {
        let req: T = match parse_body(body) {
            Ok(r) => r,
            Err((status, message)) => return error(status, message),
        };
        let cmd = match Command::try_from(req) {
            Ok(c) => c,
            Err(e) => return error(status_of(&e), e.to_string()),
        };
        answer(self.call(cmd).await)
    }
}

fn answer(result: Result<Reply, ServiceError>) -> Response {
    match result {
        Ok(Reply::Interface { iface, created }) => json(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &iface,
        ),
        Ok(Reply::Released(r)) => json(StatusCode::OK, &r),
        Ok(Reply::Port(m)) => json(StatusCode::OK, &m),
        Ok(Reply::Link(l)) => json(StatusCode::OK, &l),
        Ok(Reply::Attached { attached, created }) => json(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &attached,
        ),
        Ok(Reply::Detached(d)) => json(StatusCode::OK, &d),
        Ok(Reply::State(s)) => json(StatusCode::OK, &s),
        Ok(Reply::Health(h)) => json(StatusCode::OK, &h),
        Err(e) => error(status_of(&e), e.to_string()),
    }
}

async fn allocate_interface(
    State(app): State<App>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    app.serve::<api::AllocateInterface>(body).await
}

async fn release_interface(
    State(app): State<App>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    app.serve::<api::ReleaseInterface>(body).await
}

async fn allocate_port(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    app.serve::<api::AllocatePort>(body).await
}

async fn release_port(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    app.serve::<api::ReleasePort>(body).await
}

async fn link(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    app.serve::<api::Link>(body).await
}

async fn attach(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    app.serve::<api::Attach>(body).await
}

async fn detach(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    app.serve::<api::Detach>(body).await
}

async fn state(State(app): State<App>) -> Response {
    answer(app.call(Command::State).await)
}

async fn health(State(app): State<App>) -> Response {
    answer(app.call(Command::Health).await)
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("page not found: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed on {}", uri.path()),
    )
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(
        %method,
        %path,
        status = resp.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use netcore::handlers::HandlerError;
    use netcore::ipam::IpamError;
    use netcore::ports::{PortError, Proto};

    #[test]
    fn every_error_maps_to_its_status() {
        let ip = "172.17.0.2".parse().expect("valid");
        let cases: Vec<(ServiceError, u16)> = vec![
            (ServiceError::BadInput("x".into()), 400),
            (HandlerError::EmptyId.into(), 400),
            (HandlerError::ContainerPortZero.into(), 400),
            (HandlerError::BadHostIp("localhost".into()).into(), 400),
            (
                HandlerError::Ipam(IpamError::OutOfRange {
                    ip,
                    range: netcore::ipam::IpAllocator::new(
                        "172.17.42.1/16".parse().expect("valid"),
                        None,
                    )
                    .expect("valid")
                    .range(),
                })
                .into(),
                400,
            ),
            (HandlerError::NothingToRelease("c1".into()).into(), 404),
            (HandlerError::UnknownContainer("c1".into()).into(), 404),
            (HandlerError::UnknownIp(ip).into(), 404),
            (
                HandlerError::NotMapped {
                    id: "c1".into(),
                    host_ip: ip,
                    host_port: 80,
                    proto: Proto::Tcp,
                }
                .into(),
                404,
            ),
            (
                HandlerError::AlreadyAllocated {
                    id: "c1".into(),
                    ip,
                }
                .into(),
                409,
            ),
            (
                HandlerError::Ipam(IpamError::AlreadyAllocated { ip }).into(),
                409,
            ),
            (
                HandlerError::Port(PortError::AlreadyAllocated {
                    ip,
                    port: 80,
                    proto: Proto::Tcp,
                    held_by: ip,
                })
                .into(),
                409,
            ),
            (
                ServiceError::NotFound("network namespace /proc/1/ns/net not found".into()),
                404,
            ),
            (ServiceError::Conflict("bind".into()), 409),
            (ServiceError::Host("iptables".into()), 500),
            (ServiceError::Unavailable("gone".into()), 503),
        ];
        for (e, want) in cases {
            assert_eq!(status_of(&e).as_u16(), want, "{e:?}");
            // The message is the error's own text (Docker's where it has one).
            let resp = answer(Err(e.clone()));
            assert_eq!(resp.status().as_u16(), want);
        }
        assert_eq!(
            ServiceError::from(HandlerError::Port(PortError::AlreadyAllocated {
                ip: "0.0.0.0".parse().expect("valid"),
                port: 80,
                proto: Proto::Tcp,
                held_by: "0.0.0.0".parse().expect("valid"),
            }))
            .to_string(),
            "Bind for 0.0.0.0:80 failed: port is already allocated"
        );
    }

    #[test]
    fn bodies_that_do_not_fit_are_400_with_the_reason() {
        let cases: [(&str, &str); 5] = [
            ("{", "EOF while parsing"),
            ("", "EOF while parsing"),
            (r#"{"id":"c1","bogus":1}"#, "unknown field `bogus`"),
            (
                r#"{"id":5}"#,
                "invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"id":"c1","container_port":70000}"#,
                "invalid value: integer `70000`",
            ),
        ];
        for (body, why) in cases {
            let got = if body.contains("container_port") {
                parse_body::<api::AllocatePort>(Ok(Bytes::from(body))).map(drop)
            } else {
                parse_body::<api::AllocateInterface>(Ok(Bytes::from(body))).map(drop)
            };
            let (status, message) = got.expect_err(body);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(message.contains(why), "{body}: {message}");
            // As the client sees it: {"message": ...}.
            let text = body_text(error(status, message));
            assert!(
                text.starts_with(r#"{"message":"invalid request body: "#),
                "{text}"
            );
        }
        let ok: api::AllocateInterface =
            parse_body(Ok(Bytes::from(r#"{"id":"c1"}"#))).expect("valid");
        assert_eq!(ok.id, "c1");
    }

    fn body_text(resp: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let bytes = rt
            .block_on(axum::body::to_bytes(resp.into_body(), usize::MAX))
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[test]
    fn request_values_are_parsed_with_messages_naming_them() {
        use super::super::service::{parse_port_proto, parse_proto};
        assert_eq!(parse_proto(None), Ok(Proto::Tcp));
        assert_eq!(parse_proto(Some("sctp")), Ok(Proto::Sctp));
        let e = parse_proto(Some("icmp")).expect_err("unknown");
        assert_eq!(status_of(&e), StatusCode::BAD_REQUEST);
        assert!(e.to_string().contains("\"icmp\""), "{e}");
        assert_eq!(parse_port_proto("5432/udp"), Ok((5432, Proto::Udp)));
        assert_eq!(parse_port_proto("80"), Ok((80, Proto::Tcp)));
        for bad in ["0/tcp", "70000/tcp", "x/tcp", "80/icmp", ""] {
            let e = parse_port_proto(bad).expect_err(bad);
            assert_eq!(status_of(&e), StatusCode::BAD_REQUEST);
        }
        let e = Command::try_from(api::AllocateInterface {
            id: "c1".into(),
            requested_ip: Some("172.17.0.300".into()),
            requested_mac: None,
        })
        .expect_err("bad ip");
        assert!(e.to_string().contains("\"172.17.0.300\""), "{e}");
        let e = Command::try_from(api::AllocateInterface {
            id: "c1".into(),
            requested_ip: None,
            requested_mac: Some("02:42".into()),
        })
        .expect_err("bad mac");
        assert!(e.to_string().contains("\"02:42\""), "{e}");
        let e = Command::try_from(api::AllocatePort {
            id: "c1".into(),
            host_ip: Some("localhost".into()),
            host_port: None,
            container_port: 80,
            proto: None,
        })
        .expect_err("bad host ip");
        assert_eq!(e.to_string(), "Bad parameter: invalid host ip localhost");
        assert_eq!(status_of(&e), StatusCode::BAD_REQUEST);
        let e = Command::try_from(api::Link {
            parent_ip: "172.17.0.2".into(),
            child_ip: "nope".into(),
            ports: vec![],
            enable: true,
        })
        .expect_err("bad child");
        assert!(e.to_string().contains("child_ip \"nope\""), "{e}");
    }
}
