//! `sqlx::migrate!` embeds this directory's `NNNN_*.sql` files at compile
//! time: rebuild when a migration is added or changed.

fn main() {
    println!("cargo:rerun-if-changed=.");
}
