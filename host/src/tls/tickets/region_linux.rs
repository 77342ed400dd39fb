//! The shared [`Secrets`] record: an anonymous `MAP_SHARED` mapping, so that processes
//! forked after it is made (process mode's workers) see the writer's rotations.

// FFI boundary: mapping memory shared with forked processes.
#![allow(unsafe_code)]

use std::io;
use std::num::NonZeroUsize;

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

use super::secrets::Secrets;

/// Map a new, empty record, never unmapped (every TLS configuration of the process uses it).
pub fn map() -> io::Result<&'static Secrets> {
    let bytes = NonZeroUsize::new(std::mem::size_of::<Secrets>()).expect("non-empty record");
    // SAFETY: a fresh anonymous mapping aliases nothing; it is zero-filled, and all-zero
    // bytes are a valid `Secrets` (atomics at 0); page alignment satisfies its alignment.
    let ptr = unsafe {
        mmap_anonymous(
            None,
            bytes,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    }?;
    // SAFETY: the mapping is valid for `size_of::<Secrets>()` bytes, initialised (zeros),
    // never unmapped, and only shared through atomics.
    Ok(unsafe { ptr.cast::<Secrets>().as_ref() })
}
