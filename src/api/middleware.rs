//! The HTTP side of the abuse limits ([`crate::limits`] holds the limiters as
//! plain logic): the request-head size check (middleware) and the per-address
//! connection cap (`HttpServer::on_connect` hook).

use std::any::Any;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use super::ApiError;
use crate::limits::{ConnectionLimiter, Limits, LimitsConfig};

/// `HttpServer::on_connect` hook: count each accepted connection against its
/// address's allowance (`limits.max_connections_per_address`). A connection over
/// it is shut down at once, before a byte of it is read: the client sees the
/// connection closed without an answer, and its slot is free again at once. This
/// runs as soon as actix hands the connection over: right after `accept` on plain
/// HTTP, after the TLS handshake with TLS (a handshake is bounded by actix's
/// 3-second handshake timeout).
pub fn on_connect(limiter: &Arc<ConnectionLimiter>, io: &dyn Any, data: &mut Extensions) {
    use actix_tls::accept::rustls_0_23::TlsStream;
    use actix_web::rt::net::TcpStream;
    let tcp = if let Some(tcp) = io.downcast_ref::<TcpStream>() {
        tcp
    } else if let Some(tls) = io.downcast_ref::<TlsStream<TcpStream>>() {
        tls.get_ref().0
    } else {
        return;
    };
    let Ok(peer) = tcp.peer_addr() else {
        // Already gone: nothing to hold.
        let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Both);
        return;
    };
    match limiter.admit(peer.ip()) {
        Some(slot) => {
            data.insert(slot);
        }
        None => {
            tracing::debug!(
                peer = %peer.ip(),
                "connection over limits.max_connections_per_address closed"
            );
            let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Bytes of a request head as sent: request line and `name: value\r\n` lines.
fn head_bytes(req: &ServiceRequest) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |pq| pq.as_str().len())
        + 12;
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// Middleware: refuse a request head over `limits.max_header_bytes` with 431,
/// before authentication or any handler.
pub async fn check_request_head(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let max = req
        .app_data::<web::Data<Limits>>()
        .map_or(LimitsConfig::default().max_header_bytes, |l| {
            l.config.max_header_bytes
        });
    if head_bytes(&req) > max {
        let res = ApiError::HeadersTooLarge(max).error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
