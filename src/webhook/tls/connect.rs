//! The TLS step of the connector chain: wraps a connected transport in a
//! rustls client connection made from the dispatcher's configuration.
//!
//! It does what ureq's `RustlsConnector` does (and its transport is the same
//! few lines), with a configuration built by hookpool instead of from ureq's
//! `TlsConfig`. The server name, for SNI and for checking the certificate, is
//! always the URL's host, whichever address the resolver pinned the
//! connection to: the private-network guard changes where the connection
//! goes, never whom the certificate must name.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;
use ureq::unversioned::transport::time::{Duration, Instant};
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};

/// Wraps `https` connections in TLS; passes everything else through.
pub(crate) struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl TlsConnector {
    pub(crate) fn new(config: Arc<ClientConfig>) -> Self {
        TlsConnector { config }
    }

    /// ureq's default chain (CONNECT proxies, TCP), then this connector.
    pub(crate) fn chain(config: Arc<ClientConfig>) -> impl Connector<(), Out = impl Transport> {
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(TlsConnector::new(config))
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails<'_>,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .ok_or(ureq::Error::Tls("url has no host"))?;
        // An IPv6 literal comes in brackets.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host)
            .map_err(|_| ureq::Error::Tls("host is not a valid tls server name"))?
            .to_owned();
        let mut conn = ClientConnection::new(Arc::clone(&self.config), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        // The handshake shares the connect timeout with the TCP connect.
        sock.set_timeout(remaining(
            details.timeout,
            details.now,
            (details.current_time)(),
        ));
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned::new(conn, sock),
        })))
    }
}

/// What is left of `timeout`, started at `started`, at `now`.
fn remaining(timeout: NextTimeout, started: Instant, now: Instant) -> NextTimeout {
    let mut left = timeout;
    if let (Duration::Exact(limit), Instant::Exact(started), Instant::Exact(now)) =
        (timeout.after, started, now)
    {
        left.after = Duration::Exact(limit.saturating_sub(now.saturating_duration_since(started)));
    }
    left
}

/// A TLS connection over the chained transport.
pub(crate) struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("inner", &self.stream.sock.inner())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_gets_what_is_left_of_the_connect_timeout() {
        let t0 = std::time::Instant::now();
        let timeout = NextTimeout {
            after: Duration::from_secs(5),
            reason: ureq::Timeout::Connect,
            per_read: None,
            per_write: None,
        };
        let left = remaining(
            timeout,
            Instant::Exact(t0),
            Instant::Exact(t0 + std::time::Duration::from_secs(2)),
        );
        assert_eq!(left.after, Duration::from_secs(3));
        assert_eq!(left.reason, ureq::Timeout::Connect);
        let late = remaining(
            timeout,
            Instant::Exact(t0),
            Instant::Exact(t0 + std::time::Duration::from_secs(9)),
        );
        assert_eq!(late.after, Duration::from_secs(0));
        let never = NextTimeout {
            after: Duration::NotHappening,
            ..timeout
        };
        assert_eq!(
            remaining(never, Instant::Exact(t0), Instant::now()).after,
            Duration::NotHappening
        );
    }
}
