fn main() {
    println!("ovafs");
}
