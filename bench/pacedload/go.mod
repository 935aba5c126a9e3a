module pulse/bench/pacedload

go 1.21
