//! The compact binary encoding of the store's internal records: a version
//! byte, then fixed-width little-endian integers and length-prefixed bytes.
//! It is what the journal and the state engine hold; the HTTP API still
//! speaks JSON.

use anyhow::{bail, Context, Result};

/// Builds one encoded record.
pub struct Writer(Vec<u8>);

impl Writer {
    /// A record of format `version`, with room for `capacity` bytes.
    pub fn new(version: u8, capacity: usize) -> Writer {
        let mut bytes = Vec::with_capacity(capacity + 1);
        bytes.push(version);
        Writer(bytes)
    }

    /// Appends one byte.
    pub fn u8(&mut self, value: u8) -> &mut Writer {
        self.0.push(value);
        self
    }

    /// Appends 4 bytes, little-endian.
    pub fn u32(&mut self, value: u32) -> &mut Writer {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends 8 bytes, little-endian.
    pub fn u64(&mut self, value: u64) -> &mut Writer {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends a u32 length, then the bytes.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Writer {
        self.u32(value.len() as u32);
        self.0.extend_from_slice(value);
        self
    }

    /// Appends a string, as [`Writer::bytes`].
    pub fn str(&mut self, value: &str) -> &mut Writer {
        self.bytes(value.as_bytes())
    }

    /// `0`, or `1` and the string.
    pub fn opt_str(&mut self, value: Option<&str>) -> &mut Writer {
        match value {
            None => self.u8(0),
            Some(value) => self.u8(1).str(value),
        }
    }

    /// Takes the encoded record; the writer is left empty.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Reads one encoded record, failing with the record's name on any short
/// or malformed field.
pub struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
    version: u8,
}

impl<'a> Reader<'a> {
    /// Reads a `what` record of format 1 to `version` (older formats stay
    /// readable: a record's reader asks [`Reader::version`] what it holds).
    pub fn new(bytes: &'a [u8], what: &'static str, version: u8) -> Result<Reader<'a>> {
        let mut reader = Reader {
            bytes,
            what,
            version: 0,
        };
        let found = reader.u8()?;
        if !(1..=version).contains(&found) {
            bail!("{what} record of unknown format {found} (this aviary reads formats 1 to {version})");
        }
        reader.version = found;
        Ok(reader)
    }

    /// The format of the record being read.
    pub fn version(&self) -> u8 {
        self.version
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            bail!("{} record is cut short", self.what);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }

    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }

    /// Reads length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// Reads a length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<String> {
        let bytes = self.bytes()?;
        Ok(std::str::from_utf8(bytes)
            .with_context(|| format!("{} record holds a string that is not UTF-8", self.what))?
            .to_owned())
    }

    /// Reads an optional string, as [`Writer::opt_str`] wrote it.
    pub fn opt_str(&mut self) -> Result<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            tag => bail!("{} record has a bad option tag {tag}", self.what),
        }
    }

    /// Checks that nothing is left over.
    pub fn end(self) -> Result<()> {
        if !self.bytes.is_empty() {
            bail!(
                "{} record has {} bytes too many",
                self.what,
                self.bytes.len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_and_damage_is_named() {
        let bytes = Writer::new(3, 16)
            .u8(9)
            .u64(1 << 40)
            .str("héllo")
            .opt_str(None)
            .opt_str(Some("x"))
            .finish();
        let mut reader = Reader::new(&bytes, "test", 3).unwrap();
        assert_eq!(reader.u8().unwrap(), 9);
        assert_eq!(reader.u64().unwrap(), 1 << 40);
        assert_eq!(reader.str().unwrap(), "héllo");
        assert_eq!(reader.opt_str().unwrap(), None);
        assert_eq!(reader.opt_str().unwrap().as_deref(), Some("x"));
        reader.end().unwrap();
        let error = Reader::new(&bytes, "test", 2).err().unwrap().to_string();
        assert!(error.contains("unknown format 3"), "{error}");
        let newer = Reader::new(&bytes, "test", 4).unwrap();
        assert_eq!(newer.version(), 3, "a newer reader reads older formats");
        let mut short = Reader::new(&bytes[..5], "test", 3).unwrap();
        short.u8().unwrap();
        assert!(short
            .u64()
            .unwrap_err()
            .to_string()
            .contains("test record is cut short"));
    }
}
