//! 0x0107 terminal attributes (JT/T 808-2013 §8.15 table 20; 2019 widens
//! model and terminal id to 30 bytes) and 0x0108 upgrade result (§8.17 table 22).

use bytes::{BufMut, BytesMut};

use super::reader::{put_fixed, trim_nul, Reader};
use crate::jt808::error::Error;
use crate::jt808::header::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// Bit 0 passenger, 1 dangerous goods, 2 freight, 3 taxi, 6 video, 7 split unit.
    pub terminal_type: u16,
    pub maker_id: &'a [u8],
    pub model: &'a [u8],
    pub terminal_id: &'a [u8],
    /// SIM ICCID, `BCD[10]`.
    pub iccid: [u8; 10],
    pub hardware_version: &'a [u8],
    pub firmware_version: &'a [u8],
    /// Bit 0 GPS, 1 BeiDou, 2 GLONASS, 3 Galileo.
    pub gnss: u8,
    /// Bit 0 GPRS, 1 CDMA, 2 TD-SCDMA, 3 WCDMA, 4 CDMA2000, 5 TD-LTE, 7 other.
    pub comm: u8,
}

fn widths(version: Version) -> (usize, usize) {
    if version == Version::V2019 {
        (30, 30)
    } else {
        (20, 7)
    }
}

impl<'a> Attributes<'a> {
    pub(crate) fn decode(body: &'a [u8], version: Version) -> Result<Self, Error> {
        let (mo, tw) = widths(version);
        let mut r = Reader::new(body);
        let terminal_type = r.u16("attributes: type missing")?;
        let maker_id = trim_nul(r.bytes(5, "attributes: maker id truncated")?);
        let model = trim_nul(r.bytes(mo, "attributes: model truncated")?);
        let terminal_id = trim_nul(r.bytes(tw, "attributes: terminal id truncated")?);
        let mut iccid = [0u8; 10];
        iccid.copy_from_slice(r.bytes(10, "attributes: ICCID truncated")?);
        let n = r.u8("attributes: hardware version length missing")? as usize;
        let hardware_version = r.bytes(n, "attributes: hardware version truncated")?;
        let n = r.u8("attributes: firmware version length missing")? as usize;
        let firmware_version = r.bytes(n, "attributes: firmware version truncated")?;
        Ok(Attributes {
            terminal_type,
            maker_id,
            model,
            terminal_id,
            iccid,
            hardware_version,
            firmware_version,
            gnss: r.u8("attributes: GNSS attributes missing")?,
            comm: r.u8("attributes: communication attributes missing")?,
        })
    }

    pub(crate) fn encode(&self, version: Version, out: &mut BytesMut) {
        let (mo, tw) = widths(version);
        out.put_u16(self.terminal_type);
        put_fixed(out, self.maker_id, 5, 0);
        put_fixed(out, self.model, mo, 0);
        put_fixed(out, self.terminal_id, tw, 0);
        out.put_slice(&self.iccid);
        for s in [self.hardware_version, self.firmware_version] {
            let n = s.len().min(255);
            out.put_u8(n as u8);
            out.put_slice(&s[..n]);
        }
        out.put_u8(self.gnss);
        out.put_u8(self.comm);
    }
}

/// 0x0108 upgrade result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpgradeResult {
    /// 0 terminal, 12 IC-card reader, 52 BeiDou module.
    pub kind: u8,
    /// 0 success, 1 failure, 2 cancelled.
    pub result: u8,
}

impl UpgradeResult {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        Ok(UpgradeResult {
            kind: r.u8("upgrade result: type missing")?,
            result: r.u8("upgrade result: result missing")?,
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.kind);
        out.put_u8(self.result);
    }
}
