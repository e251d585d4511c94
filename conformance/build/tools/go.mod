module github.com/citoroute/citoroute/conformance/build/tools

go 1.24.0
