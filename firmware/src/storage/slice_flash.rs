//! [`SliceFlash`]: NOR flash semantics over a byte slice the board gives
//! it, for a memory that keeps its contents but has no flash controller
//! (the QEMU image's journal lives in the emulated board's PSRAM, which
//! QEMU maps from a host file so that it survives a killed emulator).
//!
//! Semantics are those of NOR flash, as [`super::ram_flash`]: erase sets a
//! whole `SECTOR` to `0xFF`, a write can only clear bits (`old & new`),
//! writes must be aligned to [`SliceFlash::WRITE_SIZE`]. So a journal bug
//! that would corrupt a real flash corrupts this one the same way.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Why a flash operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceFlashError {
    /// Misaligned or out of bounds.
    Bounds,
}

impl NorFlashError for SliceFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::OutOfBounds
    }
}

/// NOR flash over `mem`, in sectors of `SECTOR` bytes.
#[derive(Debug)]
pub struct SliceFlash<'a, const SECTOR: usize> {
    mem: &'a mut [u8],
}

impl<'a, const SECTOR: usize> SliceFlash<'a, SECTOR> {
    /// A flash over `mem` (its length a multiple of `SECTOR`; a tail
    /// shorter than a sector is not used).
    pub fn new(mem: &'a mut [u8]) -> Self {
        let whole = mem.len() / SECTOR * SECTOR;
        Self {
            mem: &mut mem[..whole],
        }
    }

    fn range(&self, offset: u32, len: usize, align: usize) -> Result<usize, SliceFlashError> {
        let start = offset as usize;
        if !start.is_multiple_of(align)
            || !len.is_multiple_of(align)
            || start + len > self.mem.len()
        {
            return Err(SliceFlashError::Bounds);
        }
        Ok(start)
    }
}

impl<const SECTOR: usize> ErrorType for SliceFlash<'_, SECTOR> {
    type Error = SliceFlashError;
}

impl<const SECTOR: usize> ReadNorFlash for SliceFlash<'_, SECTOR> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let start = self.range(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.mem[start..start + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const SECTOR: usize> NorFlash for SliceFlash<'_, SECTOR> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if to < from {
            return Err(SliceFlashError::Bounds);
        }
        let start = self.range(from, (to - from) as usize, SECTOR)?;
        self.mem[start..to as usize].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let start = self.range(offset, bytes.len(), Self::WRITE_SIZE)?;
        for (m, b) in self.mem[start..start + bytes.len()].iter_mut().zip(bytes) {
            *m &= *b;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::journal::{Journal, Snapshot};

    #[test]
    fn writes_only_clear_bits_erase_sets_ones_and_bounds_are_checked() {
        let mut mem = [0xFFu8; 64 + 3];
        let mut f: SliceFlash<'_, 32> = SliceFlash::new(&mut mem);
        assert_eq!(f.capacity(), 64);
        f.write(4, &[0x0F, 0xF0, 0xFF, 0x00]).unwrap();
        f.write(4, &[0xF3, 0x3F, 0x0F, 0xFF]).unwrap();
        let mut b = [0u8; 4];
        f.read(4, &mut b).unwrap();
        assert_eq!(b, [0x03, 0x30, 0x0F, 0x00]);
        assert_eq!(f.write(2, &[0; 4]), Err(SliceFlashError::Bounds));
        assert_eq!(f.write(64, &[0; 4]), Err(SliceFlashError::Bounds));
        assert_eq!(f.erase(0, 16), Err(SliceFlashError::Bounds));
        f.erase(0, 32).unwrap();
        f.read(4, &mut b).unwrap();
        assert_eq!(b, [0xFF; 4]);
    }

    #[test]
    fn the_journal_keeps_its_state_in_the_slice_across_reopening() {
        let mut mem = std::vec![0xFFu8; 3 * 4096];
        {
            let mut j = Journal::open(SliceFlash::<'_, 4096>::new(&mut mem), 0, 3).unwrap();
            let s = Snapshot {
                boot: 7,
                ..Snapshot::default()
            };
            j.write_state(s).unwrap();
        }
        let j = Journal::open(SliceFlash::<'_, 4096>::new(&mut mem), 0, 3).unwrap();
        assert_eq!(j.snapshot().boot, 7);
    }
}
