//! 0x0102 terminal authentication (JT/T 808-2013 §8.8 table 9; 2019 adds a
//! length byte, IMEI BYTE[15] and software version BYTE[20]).

use bytes::{BufMut, BytesMut};

use super::reader::{put_fixed, trim_nul, Reader};
use crate::jt808::error::Error;
use crate::jt808::header::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    pub code: &'a [u8],
    /// 2019 only.
    pub imei: Option<&'a [u8]>,
    /// 2019 only.
    pub software_version: Option<&'a [u8]>,
}

impl<'a> Auth<'a> {
    pub(crate) fn decode(body: &'a [u8], version: Version) -> Result<Self, Error> {
        if version != Version::V2019 {
            // 2011/2013: the whole body is the code.
            return Ok(Auth {
                code: body,
                imei: None,
                software_version: None,
            });
        }
        let mut r = Reader::new(body);
        let n = r.u8("auth: code length missing")? as usize;
        let code = r.bytes(n, "auth: code shorter than its length byte")?;
        let imei = trim_nul(r.bytes(15, "auth: IMEI truncated")?);
        let sw = trim_nul(r.bytes(20, "auth: software version truncated")?);
        Ok(Auth {
            code,
            imei: Some(imei),
            software_version: Some(sw),
        })
    }

    pub(crate) fn encode(&self, version: Version, out: &mut BytesMut) {
        if version != Version::V2019 {
            out.put_slice(self.code);
            return;
        }
        let n = self.code.len().min(255);
        out.put_u8(n as u8);
        out.put_slice(&self.code[..n]);
        put_fixed(out, self.imei.unwrap_or(b""), 15, 0);
        put_fixed(out, self.software_version.unwrap_or(b""), 20, 0);
    }
}
