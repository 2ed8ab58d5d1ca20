//! A transport wrapper that sends a request's head and body in one write,
//! and probes a pooled connection once instead of twice.
//!
//! ureq 3 writes the head, then the body, each with its own `send(2)` (and,
//! with a global timeout, its own `setsockopt` for the write timeout). On
//! loopback that second segment cost more CPU than anything hookpool does
//! itself (see docs/BENCHMARKS.md). The wrapper holds writes back until ureq
//! waits for the answer, so a webhook leaves in one segment, as wrk's and
//! hyper's requests do.
//!
//! ureq also checks that a kept-alive connection is still usable both when
//! it returns it to its pool and when it takes it out again, three system
//! calls each time; the wrapper answers the first itself (see
//! `Coalesced::is_open`). Together that is 7 system calls per webhook on a
//! reused connection instead of 10.

use std::fmt;

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// Chained after ureq's default connector: wraps whatever it connected
/// (TCP, TLS, proxy) in a [`Coalesced`] transport.
#[derive(Debug, Default)]
pub(crate) struct Coalesce;

impl<In: Transport> Connector<In> for Coalesce {
    type Out = Coalesced<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails<'_>,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(|inner| Coalesced {
            inner,
            pending: Vec::new(),
            answered: false,
        }))
    }
}

/// Buffers outgoing bytes until input is awaited or half the output buffer
/// is filled; larger writes pass straight through.
pub(crate) struct Coalesced<T> {
    inner: T,
    pending: Vec<u8>,
    /// Input arrived since the last request went out, and the connection
    /// has not been probed since (see `is_open`).
    answered: bool,
}

impl<T: Transport> Coalesced<T> {
    /// Sends what is held back, through the inner transport's own output
    /// buffer, in as many writes as it takes.
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let mut sent = 0;
        while sent < self.pending.len() {
            let output = self.inner.buffers().output();
            let n = output.len().min(self.pending.len() - sent);
            if n == 0 {
                return Err(ureq::Error::Io(std::io::Error::other(
                    "transport has no output buffer",
                )));
            }
            output[..n].copy_from_slice(&self.pending[sent..sent + n]);
            self.inner.transmit_output(n, timeout)?;
            sent += n;
        }
        self.pending.clear();
        Ok(())
    }
}

impl<T: Transport> Transport for Coalesced<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.answered = false;
        let capacity = self.inner.buffers().output().len();
        if self.pending.is_empty() && amount > capacity / 2 {
            return self.inner.transmit_output(amount, timeout);
        }
        let output = &self.inner.buffers().output()[..amount];
        self.pending.extend_from_slice(output);
        if self.pending.len() > capacity / 2 {
            self.flush(timeout)?;
        }
        Ok(())
    }

    // Overridden as well as `await_input`: ureq may look at buffered input
    // (an early answer) through this one, and the request must be out first.
    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        if !self.pending.is_empty() {
            self.flush(timeout)?;
        }
        let input = self.inner.maybe_await_input(timeout)?;
        self.answered |= input;
        Ok(input)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        if !self.pending.is_empty() {
            self.flush(timeout)?;
        }
        let input = self.inner.await_input(timeout)?;
        self.answered |= input;
        Ok(input)
    }

    fn is_open(&mut self) -> bool {
        // Unsent bytes mean the exchange broke off half-way: not reusable.
        if !self.pending.is_empty() {
            return false;
        }
        // ureq probes a connection twice between one answer and the next
        // request: as it returns the connection to its pool, right after
        // reading the answer, and as it takes it out again for the next
        // request. Each probe of a TCP stream is three system calls (the
        // socket to non-blocking, a read, back to blocking). The second
        // checks everything the first does, later: stray bytes after the
        // answer are still unread in the socket, and a close by the server
        // is still seen. So the first is skipped.
        if std::mem::take(&mut self.answered) {
            return true;
        }
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

impl<T: fmt::Debug> fmt::Debug for Coalesced<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesced")
            .field("inner", &self.inner)
            .field("pending", &self.pending.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::unversioned::transport::LazyBuffers;
    use ureq::unversioned::transport::time::Duration;

    /// Records every write it is asked to make.
    #[derive(Debug)]
    struct Recording {
        buffers: LazyBuffers,
        writes: Vec<Vec<u8>>,
        input: Vec<u8>,
        probes: usize,
    }

    impl Recording {
        fn new(output: usize) -> Self {
            Recording {
                buffers: LazyBuffers::new(1024, output),
                writes: Vec::new(),
                input: b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                probes: 0,
            }
        }
    }

    impl Transport for Recording {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }

        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), ureq::Error> {
            self.writes.push(self.buffers.output()[..amount].to_vec());
            Ok(())
        }

        fn await_input(&mut self, _: NextTimeout) -> Result<bool, ureq::Error> {
            let input = std::mem::take(&mut self.input);
            let buf = self.buffers.input_append_buf();
            buf[..input.len()].copy_from_slice(&input);
            self.buffers.input_appended(input.len());
            Ok(!input.is_empty())
        }

        fn is_open(&mut self) -> bool {
            self.probes += 1;
            true
        }
    }

    fn timeout() -> NextTimeout {
        NextTimeout {
            after: Duration::from_secs(1),
            reason: ureq::Timeout::Global,
            per_read: None,
            per_write: None,
        }
    }

    fn write(t: &mut Coalesced<Recording>, bytes: &[u8]) {
        t.buffers().output()[..bytes.len()].copy_from_slice(bytes);
        t.transmit_output(bytes.len(), timeout()).unwrap();
    }

    fn wrap(inner: Recording) -> Coalesced<Recording> {
        Coalesced {
            inner,
            pending: Vec::new(),
            answered: false,
        }
    }

    #[test]
    fn head_and_body_leave_in_one_write_when_the_answer_is_awaited() {
        let mut t = wrap(Recording::new(4096));
        write(&mut t, b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n");
        write(&mut t, b"{}");
        assert!(t.inner.writes.is_empty());
        assert!(!t.is_open(), "a half-sent request is not reusable");
        assert!(t.await_input(timeout()).unwrap());
        assert_eq!(
            t.inner.writes,
            vec![b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}".to_vec()]
        );
        assert!(t.is_open());
    }

    #[test]
    fn maybe_await_input_flushes_too() {
        let mut t = wrap(Recording::new(4096));
        write(&mut t, b"head");
        t.maybe_await_input(timeout()).unwrap();
        assert_eq!(t.inner.writes, vec![b"head".to_vec()]);
    }

    #[test]
    fn large_writes_pass_through_and_the_held_back_part_is_sent_in_chunks() {
        let mut t = wrap(Recording::new(100));
        let big = vec![b'x'; 80];
        write(&mut t, &big);
        assert_eq!(
            t.inner.writes,
            vec![big.clone()],
            "no copy for a large write"
        );

        t.inner.writes.clear();
        write(&mut t, &[b'a'; 30]);
        assert!(t.inner.writes.is_empty());
        write(&mut t, &[b'b'; 30]);
        // 60 bytes held back is past half of 100: flushed at once.
        assert_eq!(t.inner.writes.concat(), [[b'a'; 30], [b'b'; 30]].concat());
        assert!(t.pending.is_empty());
    }

    #[test]
    fn of_the_two_probes_between_an_answer_and_the_next_request_only_the_second_is_made() {
        let mut t = wrap(Recording::new(4096));
        write(&mut t, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert!(t.await_input(timeout()).unwrap());
        // ureq returns the connection to its pool: no probe yet.
        assert!(t.is_open());
        assert_eq!(t.inner.probes, 0);
        // ureq takes it out again for the next request: probed.
        assert!(t.is_open());
        assert_eq!(t.inner.probes, 1);
        assert!(t.is_open());
        assert_eq!(t.inner.probes, 2);
        // A new answer skips one probe again; an await that read nothing
        // does not count as an answer.
        t.inner.input = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
        write(&mut t, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert!(t.await_input(timeout()).unwrap());
        assert!(t.is_open());
        assert_eq!(t.inner.probes, 2);
        write(&mut t, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert!(!t.await_input(timeout()).unwrap());
        assert!(t.is_open());
        assert_eq!(t.inner.probes, 3);
    }
}
