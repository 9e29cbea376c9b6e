//! libvirt's remote protocol, as far as a heartbeat monitor needs it to read what libvirtd sends: packet framing,
//! the message header, libvirt's error record, and the replies of the few procedures vigild calls (domain lookup,
//! info, block and interface statistics, authentication). Allocation-free: every decoder borrows from the
//! caller's packet, and every length is checked against the bytes that are there before it is used, so a packet
//! from a confused or hostile peer is a typed [`WireError`], never a panic or an allocation (fuzzed: `libvirt`).
//!
//! Facts from libvirt's `src/rpc/virnetprotocol.x` and `src/remote/remote_protocol.x` (procedure numbers are
//! stable ABI): a packet is a big-endian length word that counts itself, then six 4-byte header fields (program,
//! version, procedure, type, serial, status), then the XDR (RFC 4506) body.

/// The remote program (`REMOTE_PROGRAM`).
pub const REMOTE_PROGRAM: u32 = 0x2000_8086;
/// The QEMU-specific program (`QEMU_PROGRAM`, `src/remote/qemu_protocol.x`).
pub const QEMU_PROGRAM: u32 = 0x2000_8087;
/// `QEMU_PROC_DOMAIN_AGENT_COMMAND`.
pub const QEMU_PROC_AGENT_COMMAND: u32 = 3;
/// Its version (`REMOTE_PROTOCOL_VERSION`).
pub const REMOTE_PROTOCOL_VERSION: u32 = 1;
/// The largest packet libvirt sends or accepts, length word excluded (`VIR_NET_MESSAGE_MAX`).
pub const MESSAGE_MAX: usize = 33_554_432;
/// The length word.
pub const LEN_BYTES: usize = 4;
/// The header after the length word (`VIR_NET_MESSAGE_HEADER_MAX`).
pub const HEADER_BYTES: usize = 24;

/// Procedure numbers (`remote_procedure`) vigild calls.
pub mod proc {
    /// `REMOTE_PROC_CONNECT_OPEN`.
    pub const OPEN: u32 = 1;
    /// `REMOTE_PROC_CONNECT_CLOSE`.
    pub const CLOSE: u32 = 2;
    /// `REMOTE_PROC_DOMAIN_CREATE` (start a defined domain).
    pub const DOMAIN_CREATE: u32 = 9;
    /// `REMOTE_PROC_DOMAIN_DESTROY`.
    pub const DOMAIN_DESTROY: u32 = 12;
    /// `REMOTE_PROC_DOMAIN_GET_XML_DESC`.
    pub const DOMAIN_GET_XML_DESC: u32 = 14;
    /// `REMOTE_PROC_DOMAIN_GET_INFO`.
    pub const DOMAIN_GET_INFO: u32 = 16;
    /// `REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME`.
    pub const DOMAIN_LOOKUP_BY_NAME: u32 = 23;
    /// `REMOTE_PROC_DOMAIN_LOOKUP_BY_UUID`.
    pub const DOMAIN_LOOKUP_BY_UUID: u32 = 24;
    /// `REMOTE_PROC_DOMAIN_REBOOT`.
    pub const DOMAIN_REBOOT: u32 = 27;
    /// `REMOTE_PROC_DOMAIN_BLOCK_STATS`.
    pub const DOMAIN_BLOCK_STATS: u32 = 64;
    /// `REMOTE_PROC_DOMAIN_INTERFACE_STATS`.
    pub const DOMAIN_INTERFACE_STATS: u32 = 65;
    /// `REMOTE_PROC_AUTH_LIST`.
    pub const AUTH_LIST: u32 = 66;
    /// `REMOTE_PROC_AUTH_POLKIT`.
    pub const AUTH_POLKIT: u32 = 70;
    /// `REMOTE_PROC_DOMAIN_SCREENSHOT` (a read stream follows the reply).
    pub const DOMAIN_SCREENSHOT: u32 = 211;
    /// `REMOTE_PROC_DOMAIN_RESET`.
    pub const DOMAIN_RESET: u32 = 245;
    /// `REMOTE_PROC_CONNECT_LIST_ALL_DOMAINS`.
    pub const CONNECT_LIST_ALL_DOMAINS: u32 = 273;
    /// `REMOTE_PROC_DOMAIN_GET_TIME` (answered by the guest agent: `guest-get-time`).
    pub const DOMAIN_GET_TIME: u32 = 337;

    /// The procedure's name, for errors and logs.
    pub fn name(p: u32) -> &'static str {
        match p {
            OPEN => "open",
            CLOSE => "close",
            DOMAIN_CREATE => "domain create",
            DOMAIN_DESTROY => "domain destroy",
            DOMAIN_GET_XML_DESC => "domain get xml",
            DOMAIN_GET_INFO => "domain get info",
            DOMAIN_LOOKUP_BY_NAME => "domain lookup by name",
            DOMAIN_LOOKUP_BY_UUID => "domain lookup by uuid",
            DOMAIN_REBOOT => "domain reboot",
            DOMAIN_BLOCK_STATS => "domain block stats",
            DOMAIN_INTERFACE_STATS => "domain interface stats",
            AUTH_LIST => "auth list",
            AUTH_POLKIT => "auth polkit",
            DOMAIN_SCREENSHOT => "domain screenshot",
            DOMAIN_RESET => "domain reset",
            CONNECT_LIST_ALL_DOMAINS => "list domains",
            DOMAIN_GET_TIME => "domain get time (guest agent)",
            _ => "procedure",
        }
    }
}

/// `virNetMessageType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MsgType {
    /// A call (client to server).
    Call,
    /// The reply to a call.
    Reply,
    /// An asynchronous message (events).
    Message,
    /// Stream data.
    Stream,
    /// A call carrying file descriptors.
    CallWithFds,
    /// A reply carrying file descriptors.
    ReplyWithFds,
    /// A hole in a sparse stream.
    StreamHole,
}

/// `virNetMessageStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Status {
    /// Success (for a stream: the end of the data).
    Ok,
    /// The body is a `remote_error`.
    Error,
    /// Stream data follows, more to come.
    Continue,
}

/// A packet's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Program number.
    pub program: u32,
    /// Program version.
    pub version: u32,
    /// Procedure number.
    pub procedure: u32,
    /// What the packet is.
    pub kind: MsgType,
    /// The serial of the call it belongs to.
    pub serial: u32,
    /// Its status.
    pub status: Status,
}

/// How a packet from libvirtd was malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireError {
    /// The length word is below a header's size or above [`MESSAGE_MAX`].
    BadLength(u32),
    /// The body ended before the field being read.
    Truncated,
    /// A string or array is longer than the bound for it.
    TooLong,
    /// An XDR boolean that is neither 0 nor 1.
    BadBool,
    /// A message type or status outside libvirt's tables.
    BadHeader,
    /// A string that is not UTF-8.
    NotUtf8,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::BadLength(n) => write!(f, "packet length {n} out of range"),
            WireError::Truncated => f.write_str("packet ends inside a field"),
            WireError::TooLong => f.write_str("string or array longer than its bound"),
            WireError::BadBool => f.write_str("boolean neither 0 nor 1"),
            WireError::BadHeader => f.write_str("unknown message type or status"),
            WireError::NotUtf8 => f.write_str("string not UTF-8"),
        }
    }
}

/// The packet's size (after the 4-byte length word) from that word, checked.
pub fn body_len(len_word: [u8; 4]) -> Result<usize, WireError> {
    let n = u32::from_be_bytes(len_word);
    let total = n as usize;
    if total < LEN_BYTES + HEADER_BYTES || total - LEN_BYTES > MESSAGE_MAX {
        return Err(WireError::BadLength(n));
    }
    Ok(total - LEN_BYTES)
}

/// Splits a packet (without its length word) into its header and body.
pub fn decode_header(packet: &[u8]) -> Result<(Header, &[u8]), WireError> {
    let mut r = Xdr::new(packet);
    let program = r.u32()?;
    let version = r.u32()?;
    let procedure = r.u32()?;
    let kind = match r.u32()? {
        0 => MsgType::Call,
        1 => MsgType::Reply,
        2 => MsgType::Message,
        3 => MsgType::Stream,
        4 => MsgType::CallWithFds,
        5 => MsgType::ReplyWithFds,
        6 => MsgType::StreamHole,
        _ => return Err(WireError::BadHeader),
    };
    let serial = r.u32()?;
    let status = match r.u32()? {
        0 => Status::Ok,
        1 => Status::Error,
        2 => Status::Continue,
        _ => return Err(WireError::BadHeader),
    };
    Ok((Header { program, version, procedure, kind, serial, status }, r.rest()))
}

/// An XDR reader over a borrowed body.
#[derive(Clone, Debug)]
pub struct Xdr<'a> {
    buf: &'a [u8],
}

impl<'a> Xdr<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Xdr { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// An unsigned int.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A signed int.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        self.u32().map(|v| v as i32)
    }

    /// An unsigned hyper.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    /// A hyper.
    pub fn i64(&mut self) -> Result<i64, WireError> {
        self.u64().map(|v| v as i64)
    }

    /// A boolean.
    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::BadBool),
        }
    }

    /// Fixed-length opaque data of `N` bytes (padded to 4).
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let b = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(b);
        self.take(pad(N))?;
        Ok(out)
    }

    /// Variable-length opaque data of at most `max` bytes.
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(WireError::TooLong);
        }
        let b = self.take(n)?;
        self.take(pad(n))?;
        Ok(b)
    }

    /// A string of at most `max` bytes.
    pub fn string(&mut self, max: usize) -> Result<&'a str, WireError> {
        core::str::from_utf8(self.opaque(max)?).map_err(|_| WireError::NotUtf8)
    }

    /// An optional string (`remote_string`).
    pub fn opt_string(&mut self, max: usize) -> Result<Option<&'a str>, WireError> {
        if self.bool()? {
            self.string(max).map(Some)
        } else {
            Ok(None)
        }
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

/// Bytes of padding after `n` bytes of opaque data.
pub const fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Longest domain name or error message kept from a reply.
pub const MAX_NAME: usize = 4096;
/// Longest error message kept.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// libvirt's error record (`remote_error`), as far as it is read: the code, the module and the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteError<'a> {
    /// `virErrorNumber`.
    pub code: i32,
    /// `virErrorDomain` (which part of libvirt).
    pub domain: i32,
    /// The message, when there is one.
    pub message: Option<&'a str>,
}

/// `VIR_ERR_NO_DOMAIN`: the domain does not exist.
pub const ERR_NO_DOMAIN: i32 = 42;
/// `VIR_ERR_OPERATION_INVALID`: e.g. a domain that is not running.
pub const ERR_OPERATION_INVALID: i32 = 55;
/// `VIR_ERR_OPERATION_TIMEOUT`.
pub const ERR_OPERATION_TIMEOUT: i32 = 68;
/// `VIR_ERR_AGENT_UNRESPONSIVE`: the guest agent is not connected, not running or not answering.
pub const ERR_AGENT_UNRESPONSIVE: i32 = 86;
/// `REMOTE_DOMAIN_LIST_MAX`.
pub const DOMAIN_LIST_MAX: u32 = 16_384;

/// Reads a `remote_error` body.
pub fn decode_error(body: &[u8]) -> Result<RemoteError<'_>, WireError> {
    let mut r = Xdr::new(body);
    let code = r.i32()?;
    let domain = r.i32()?;
    let message = r.opt_string(MAX_MESSAGE)?;
    Ok(RemoteError { code, domain, message })
}

/// A domain as the protocol names it (`remote_nonnull_domain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Domain<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// Its id while running (-1 otherwise).
    pub id: i32,
}

/// Reads a `remote_nonnull_domain` (the reply of a lookup).
pub fn decode_domain(body: &[u8]) -> Result<Domain<'_>, WireError> {
    let mut r = Xdr::new(body);
    let name = r.string(MAX_NAME)?;
    let uuid = r.fixed::<16>()?;
    let id = r.i32()?;
    Ok(Domain { name, uuid, id })
}

/// Reads `remote_connect_list_all_domains_ret`, handing each domain to `each`; returns how many there were.
pub fn decode_domain_list<'a>(body: &'a [u8], mut each: impl FnMut(Domain<'a>)) -> Result<u32, WireError> {
    let mut r = Xdr::new(body);
    let n = r.u32()?;
    if n > DOMAIN_LIST_MAX {
        return Err(WireError::TooLong);
    }
    for _ in 0..n {
        let name = r.string(MAX_NAME)?;
        let uuid = r.fixed::<16>()?;
        let id = r.i32()?;
        each(Domain { name, uuid, id });
    }
    Ok(n)
}

/// Reads `remote_domain_get_time_ret`: the guest's clock, seconds and nanoseconds.
pub fn decode_time(body: &[u8]) -> Result<(i64, u32), WireError> {
    let mut r = Xdr::new(body);
    Ok((r.i64()?, r.u32()?))
}

/// `remote_domain_get_info_ret`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    /// `virDomainState` (1 running, 3 paused, 5 shut off, 6 crashed, ...).
    pub state: u8,
    /// Maximum memory, KiB.
    pub max_mem_kib: u64,
    /// Memory, KiB.
    pub memory_kib: u64,
    /// vCPUs.
    pub vcpus: u16,
    /// CPU time used, nanoseconds.
    pub cpu_time_ns: u64,
}

/// Reads `remote_domain_get_info_ret` (XDR carries a char and a short in 4 bytes each).
pub fn decode_info(body: &[u8]) -> Result<DomainInfo, WireError> {
    let mut r = Xdr::new(body);
    let state = r.u32()? as u8;
    let max_mem_kib = r.u64()?;
    let memory_kib = r.u64()?;
    let vcpus = r.u32()? as u16;
    let cpu_time_ns = r.u64()?;
    Ok(DomainInfo { state, max_mem_kib, memory_kib, vcpus, cpu_time_ns })
}

/// `remote_domain_block_stats_ret`: requests and bytes read and written, errors (-1: not known).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Read requests.
    pub rd_req: i64,
    /// Bytes read.
    pub rd_bytes: i64,
    /// Write requests.
    pub wr_req: i64,
    /// Bytes written.
    pub wr_bytes: i64,
    /// Errors.
    pub errs: i64,
}

/// Reads `remote_domain_block_stats_ret`.
pub fn decode_block_stats(body: &[u8]) -> Result<BlockStats, WireError> {
    let mut r = Xdr::new(body);
    Ok(BlockStats { rd_req: r.i64()?, rd_bytes: r.i64()?, wr_req: r.i64()?, wr_bytes: r.i64()?, errs: r.i64()? })
}

/// `remote_domain_interface_stats_ret`, the byte and packet counters (-1: not known).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    /// Bytes received.
    pub rx_bytes: i64,
    /// Packets received.
    pub rx_packets: i64,
    /// Bytes sent.
    pub tx_bytes: i64,
    /// Packets sent.
    pub tx_packets: i64,
}

/// Reads `remote_domain_interface_stats_ret` (rx bytes, packets, errs, drop; tx the same).
pub fn decode_interface_stats(body: &[u8]) -> Result<InterfaceStats, WireError> {
    let mut r = Xdr::new(body);
    let rx_bytes = r.i64()?;
    let rx_packets = r.i64()?;
    let _rx_errs = r.i64()?;
    let _rx_drop = r.i64()?;
    let tx_bytes = r.i64()?;
    let tx_packets = r.i64()?;
    Ok(InterfaceStats { rx_bytes, rx_packets, tx_bytes, tx_packets })
}

/// `REMOTE_AUTH_NONE`.
pub const AUTH_NONE: u32 = 0;
/// `REMOTE_AUTH_SASL`.
pub const AUTH_SASL: u32 = 1;
/// `REMOTE_AUTH_POLKIT`.
pub const AUTH_POLKIT: u32 = 2;
/// `REMOTE_AUTH_TYPE_LIST_MAX`.
pub const AUTH_TYPE_LIST_MAX: usize = 20;

/// Reads `remote_auth_list_ret`: which of none / SASL / polkit the server offers, as a bit set by type number.
pub fn decode_auth_list(body: &[u8]) -> Result<u32, WireError> {
    let mut r = Xdr::new(body);
    let n = r.u32()? as usize;
    if n > AUTH_TYPE_LIST_MAX {
        return Err(WireError::TooLong);
    }
    let mut set = 0u32;
    for _ in 0..n {
        let t = r.u32()?;
        if t < 32 {
            set |= 1 << t;
        }
    }
    Ok(set)
}

/// Reads a reply that is one (optional) string, such as the screenshot's MIME type.
pub fn decode_opt_string(body: &[u8], max: usize) -> Result<Option<&str>, WireError> {
    Xdr::new(body).opt_string(max)
}

/// Reads a reply that is one string, such as a domain's XML.
pub fn decode_string(body: &[u8], max: usize) -> Result<&str, WireError> {
    Xdr::new(body).string(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(words: &[u32]) -> [u8; 64] {
        let mut out = [0; 64];
        for (i, w) in words.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    #[test]
    fn header_and_lengths() {
        assert_eq!(body_len(28u32.to_be_bytes()), Ok(24));
        assert_eq!(body_len(27u32.to_be_bytes()), Err(WireError::BadLength(27)));
        assert!(body_len(u32::MAX.to_be_bytes()).is_err());
        let p = be(&[REMOTE_PROGRAM, 1, 245, 1, 7, 0, 0xdead]);
        let (h, body) = decode_header(&p[..28]).unwrap();
        assert_eq!(h.procedure, proc::DOMAIN_RESET);
        assert_eq!((h.kind, h.serial, h.status), (MsgType::Reply, 7, Status::Ok));
        assert_eq!(body, &0xdeadu32.to_be_bytes());
        assert_eq!(decode_header(&be(&[1, 1, 1, 9, 1, 0])[..24]), Err(WireError::BadHeader));
        assert_eq!(decode_header(&p[..20]), Err(WireError::Truncated));
    }

    #[test]
    fn strings_are_bounded_padded_and_checked() {
        // "abcde" padded to 8, then an int
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&5u32.to_be_bytes());
        b[4..9].copy_from_slice(b"abcde");
        b[12..16].copy_from_slice(&9u32.to_be_bytes());
        let mut r = Xdr::new(&b);
        assert_eq!(r.string(10), Ok("abcde"));
        assert_eq!(r.u32(), Ok(9));
        assert_eq!(Xdr::new(&b).string(4), Err(WireError::TooLong));
        // a length that claims more than there is
        let huge = be(&[0x7fff_ffff]);
        assert_eq!(Xdr::new(&huge[..8]).string(usize::MAX), Err(WireError::Truncated));
        b[4] = 0xff;
        assert_eq!(Xdr::new(&b).string(10), Err(WireError::NotUtf8));
        assert_eq!(Xdr::new(&be(&[2])[..4]).bool(), Err(WireError::BadBool));
    }

    #[test]
    fn replies() {
        let info = be(&[1, 0, 200_000, 0, 100_000, 2, 0, 123_456]);
        let i = decode_info(&info[..32]).unwrap();
        assert_eq!((i.state, i.max_mem_kib, i.memory_kib, i.vcpus, i.cpu_time_ns), (1, 200_000, 100_000, 2, 123_456));
        assert_eq!(decode_auth_list(&be(&[2, 0, 2])[..12]), Ok(0b101));
        assert_eq!(decode_time(&be(&[0, 1_800_000_000, 5])[..12]), Ok((1_800_000_000, 5)));
        assert_eq!(decode_domain_list(&be(&[16_385])[..4], |_| {}), Err(WireError::TooLong));
        assert_eq!(decode_domain_list(&be(&[2, 0])[..8], |_| {}), Err(WireError::Truncated));
        assert_eq!(decode_auth_list(&be(&[21])[..4]), Err(WireError::TooLong));
        let mut dom = [0u8; 32];
        dom[..4].copy_from_slice(&2u32.to_be_bytes());
        dom[4..6].copy_from_slice(b"vm");
        dom[8..24].copy_from_slice(&[7; 16]);
        dom[24..28].copy_from_slice(&3u32.to_be_bytes());
        let d = decode_domain(&dom[..28]).unwrap();
        assert_eq!((d.name, d.uuid, d.id), ("vm", [7; 16], 3));
        let mut err = [0u8; 24];
        err[..4].copy_from_slice(&42u32.to_be_bytes());
        err[4..8].copy_from_slice(&10u32.to_be_bytes());
        err[8..12].copy_from_slice(&1u32.to_be_bytes());
        err[12..16].copy_from_slice(&3u32.to_be_bytes());
        err[16..19].copy_from_slice(b"gon");
        assert_eq!(decode_error(&err[..20]).unwrap(), RemoteError { code: 42, domain: 10, message: Some("gon") });
    }
}
