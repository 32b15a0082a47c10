// C++ allocation sites, for demangling.
#include <cstdio>
#include <vector>

namespace demo {
struct Holder {
    std::vector<char *> blocks;
    __attribute__((noinline)) void grow(int n);
};

void Holder::grow(int n) {
    for (int i = 0; i < n; i++) {
        blocks.push_back(new char[3000]); // SITE_CXX
    }
}
}  // namespace demo

int main() {
    static demo::Holder h;
    h.grow(100);
    std::printf("demo: %zu\n", h.blocks.size());
    return 0;
}
