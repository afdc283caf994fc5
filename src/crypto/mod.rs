/*!
Keys and the sealed object format. Everything that leaves the machine passes through here.
*/

pub mod key;
pub mod seal;

pub use key::{KeyId, MasterKey};
pub use seal::{SealWriter, UnsealReader, seal_bytes, unseal_bytes};
