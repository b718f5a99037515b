//! Rebuilds the crate when a migration is added or edited: `sqlx::migrate!` embeds the files at
//! compile time, and cargo does not otherwise know that it reads them.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
