//! The few raw-byte looks at a DNS message that come before (or instead of)
//! a full parse: the 12-byte header, the span of the question, and the
//! header-only error replies. Everything else goes through hickory-proto.

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;

/// Response codes used here (RFC 1035 4.1.1).
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// The fixed header of a message, as read without trusting the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// QR: set in responses.
    pub response: bool,
    pub opcode: u8,
    pub truncated: bool,
    pub recursion_desired: bool,
    pub rcode: u8,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    /// The header of `msg`, if it is long enough to have one.
    pub fn read(msg: &[u8]) -> Option<Header> {
        let h = msg.get(..HEADER_LEN)?;
        let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        Some(Header {
            id: u16_at(0),
            response: h[2] & 0x80 != 0,
            opcode: (h[2] >> 3) & 0x0f,
            truncated: h[2] & 0x02 != 0,
            recursion_desired: h[2] & 0x01 != 0,
            rcode: h[3] & 0x0f,
            qdcount: u16_at(4),
            ancount: u16_at(6),
            nscount: u16_at(8),
            arcount: u16_at(10),
        })
    }
}

/// A header-only reply to `query` (whose header was readable) with `rcode`:
/// the query's ID, opcode and RD, QR and RA set, no sections. Used where the
/// question cannot be trusted (FORMERR) or does not matter (NOTIMP).
pub fn header_reply(query: &Header, rcode: u8) -> Vec<u8> {
    let mut r = vec![0u8; HEADER_LEN];
    r[..2].copy_from_slice(&query.id.to_be_bytes());
    r[2] = 0x80 | (query.opcode << 3) | u8::from(query.recursion_desired);
    r[3] = 0x80 | rcode;
    r
}

/// The byte range of the first question (name, type and class) of `msg`,
/// following no compression pointers (a first question has nothing before
/// it to point at).
pub fn question_span(msg: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut i = HEADER_LEN;
    loop {
        let len = *msg.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 || i - HEADER_LEN + len + 1 > 255 {
            return None;
        }
        i += 1 + len;
    }
    let end = i + 4;
    (end <= msg.len()).then_some(HEADER_LEN..end)
}

/// Set the ID of a message in place.
pub fn set_id(msg: &mut [u8], id: u16) {
    if msg.len() >= 2 {
        msg[..2].copy_from_slice(&id.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for "ab.c" A with ID 0x1234 and RD.
    fn query() -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[2, b'a', b'b', 1, b'c', 0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn reads_the_header() {
        let h = Header::read(&query()).unwrap();
        assert_eq!(h.id, 0x1234);
        assert!(!h.response && h.recursion_desired && !h.truncated);
        assert_eq!((h.opcode, h.qdcount, h.arcount), (0, 1, 0));
        assert!(Header::read(&query()[..11]).is_none());
    }

    #[test]
    fn header_replies_echo_id_opcode_and_rd() {
        let mut q = query();
        q[2] |= 2 << 3; // opcode STATUS
        let h = Header::read(&q).unwrap();
        let r = header_reply(&h, RCODE_NOTIMP);
        let rh = Header::read(&r).unwrap();
        assert_eq!(r.len(), HEADER_LEN);
        assert!(rh.response && rh.recursion_desired);
        assert_eq!((rh.id, rh.opcode, rh.rcode, rh.qdcount), (0x1234, 2, RCODE_NOTIMP, 0));
    }

    #[test]
    fn finds_the_question() {
        let q = query();
        assert_eq!(question_span(&q), Some(12..q.len()));
        assert_eq!(question_span(&q[..q.len() - 1]), None);
        let mut bad = q.clone();
        bad[12] = 0xc0; // a pointer where a label should be
        assert_eq!(question_span(&bad), None);
    }
}
