module cerise.test/tools/pause

go 1.25.0
