fn main() {
    println!("braid {}", env!("CARGO_PKG_VERSION"));
}
