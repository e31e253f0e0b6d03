//! The narrow transport interface the poller, SunSpec discovery and the CLI
//! read through: [`RegisterReader`], and its implementation over a
//! `tokio-modbus` client context ([`ModbusReader`], TCP or RTU).
//!
//! "The device said no" ([`ReadError::Exception`], an answer) is kept apart
//! from "nobody answered" ([`ReadError::Timeout`]), "cannot reach it"
//! ([`ReadError::Unreachable`]: connection refused, name not resolved,
//! serial port missing) and "the link broke" ([`ReadError::Link`]): the
//! first is not retried and leaves the connection usable, the others are
//! retried and make TCP tasks reconnect.

use super::planner::ReadRequest;
use super::register_map::Table;
use std::fmt;
use std::future::Future;
use std::time::Duration;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

/// A Modbus exception code with its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exception(pub u8);

impl Exception {
    /// What the code means (Modbus application protocol spec 1.1b3, 7).
    pub fn meaning(self) -> &'static str {
        match self.0 {
            0x01 => "illegal function: the device does not support this read",
            0x02 => "illegal data address: the device has no such register",
            0x03 => "illegal data value: the request is not acceptable (count?)",
            0x04 => "server device failure; if every read answers this, the unit id may be wrong",
            0x05 => "acknowledge: accepted, still processing",
            0x06 => "server device busy",
            0x08 => "memory parity error",
            0x0A => "gateway path unavailable: the TCP gateway has no route to this unit id",
            0x0B => {
                "gateway target device failed to respond: nothing answers at this unit id behind the TCP gateway"
            }
            _ => "unknown exception code",
        }
    }
}

impl Exception {
    /// True for the answers a device or TCP gateway gives when nothing
    /// usable is at the addressed unit id (0x04 from devices that answer for
    /// any unit, 0x0A/0x0B from TCP-to-RTU gateways): when every read of a
    /// poll gets one of these, the unit id is the first thing to check.
    pub fn suggests_wrong_unit(self) -> bool {
        matches!(self.0, 0x04 | 0x0A | 0x0B)
    }

    /// True for "this address (range) cannot be read": 0x02 illegal data
    /// address, 0x03 illegal data value (devices that refuse a count or a
    /// range containing an unmapped register). A multi-register read
    /// refused like this is split to find what the device answers.
    pub fn refuses_range(self) -> bool {
        matches!(self.0, 0x02 | 0x03)
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exception {:#04x} ({})", self.0, self.meaning())
    }
}

impl From<ExceptionCode> for Exception {
    fn from(c: ExceptionCode) -> Self {
        Exception(u8::from(c))
    }
}

/// Why a read returned no data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The device answered with an exception.
    #[error("{0}")]
    Exception(Exception),
    /// No answer within the timeout.
    #[error("timeout: no answer within {0:?}")]
    Timeout(Duration),
    /// The device cannot be reached: connection refused, host name not
    /// resolved, serial port missing.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The connection broke or the answer was malformed.
    #[error("link error: {0}")]
    Link(String),
}

impl ReadError {
    /// True for faults of the link (retry, reconnect), false for answers.
    pub fn is_link_fault(&self) -> bool {
        !matches!(self, ReadError::Exception(_))
    }

    /// True when the same request may succeed if sent again: link faults,
    /// and the exceptions that mean "not now" (0x05 acknowledge, 0x06 busy).
    /// Every other exception is a final answer.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReadError::Exception(x) => matches!(x.0, 0x05 | 0x06),
            ReadError::Timeout(_) | ReadError::Unreachable(_) | ReadError::Link(_) => true,
        }
    }

    /// A short stable label for counters.
    pub fn label(&self) -> &'static str {
        match self {
            ReadError::Exception(_) => "exception",
            ReadError::Timeout(_) => "timeout",
            ReadError::Unreachable(_) => "unreachable",
            ReadError::Link(_) => "link",
        }
    }
}

/// Reads register words (or bits, as words of 0/1) from one device.
pub trait RegisterReader: Send {
    /// Executes one read request.
    fn read(
        &mut self,
        req: ReadRequest,
    ) -> impl Future<Output = Result<Vec<u16>, ReadError>> + Send;
}

/// A tokio-modbus client context with a per-request timeout.
pub struct ModbusReader {
    ctx: Context,
    timeout: Duration,
}

impl fmt::Debug for ModbusReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModbusReader")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ModbusReader {
    /// Wraps a connected context.
    pub fn new(ctx: Context, timeout: Duration) -> Self {
        ModbusReader { ctx, timeout }
    }

    /// Addresses another unit on the same link (RTU bus, TCP gateway).
    pub fn set_unit(&mut self, unit: u8) {
        self.ctx.set_slave(Slave(unit));
    }

    /// Changes the response timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Closes the connection.
    pub async fn disconnect(mut self) {
        use tokio_modbus::client::Client;
        let _ = self.ctx.disconnect().await;
    }
}

fn bits_to_words(bits: Vec<bool>) -> Vec<u16> {
    bits.into_iter().map(u16::from).collect()
}

impl RegisterReader for ModbusReader {
    async fn read(&mut self, req: ReadRequest) -> Result<Vec<u16>, ReadError> {
        let ctx = &mut self.ctx;
        let call = async move {
            match req.table {
                Table::Coils => ctx
                    .read_coils(req.start, req.count)
                    .await
                    .map(|r| r.map(bits_to_words)),
                Table::DiscreteInputs => ctx
                    .read_discrete_inputs(req.start, req.count)
                    .await
                    .map(|r| r.map(bits_to_words)),
                Table::Holding => ctx.read_holding_registers(req.start, req.count).await,
                Table::Input => ctx.read_input_registers(req.start, req.count).await,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(ReadError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(ReadError::Link(e.to_string())),
            Ok(Ok(Err(code))) => Err(ReadError::Exception(code.into())),
            Ok(Ok(Ok(mut words))) => {
                if words.len() < usize::from(req.count) {
                    return Err(ReadError::Link(format!(
                        "short answer: {} of {} items",
                        words.len(),
                        req.count
                    )));
                }
                words.truncate(usize::from(req.count));
                Ok(words)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_say_what_they_mean() {
        assert_eq!(
            Exception(2).to_string(),
            "exception 0x02 (illegal data address: the device has no such register)"
        );
        assert!(!ReadError::Exception(Exception(2)).is_link_fault());
        assert!(ReadError::Timeout(Duration::from_millis(5)).is_link_fault());
        assert!(ReadError::Exception(Exception(6)).is_retryable());
        assert!(!ReadError::Exception(Exception(2)).is_retryable());
        assert!(ReadError::Unreachable("refused".into()).is_link_fault());
        assert!(
            Exception(4).to_string().contains("unit id may be wrong"),
            "{}",
            Exception(4)
        );
        assert!(Exception(0x0B).suggests_wrong_unit() && !Exception(2).suggests_wrong_unit());
    }
}
