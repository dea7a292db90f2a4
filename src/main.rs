fn main() {
    println!("liengate");
}
