// What the plot tests share: an SVG checked for well-formed XML, by a small
// checker of our own (always) and by xmllint (when it is installed; it is
// not a dependency of `make test`).
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

namespace kvmem::test {

// Empty when text is well-formed enough: one root element, every tag closed
// in order, quoted attributes, '&' only in the entities the plot writes, no
// '<' or '>' in text. Otherwise what was wrong and where.
inline std::string xml_problem(const std::string& text) {
  std::vector<std::string> open;
  int roots = 0;
  for (size_t at = 0; at < text.size();) {
    const char c = text[at];
    if (c == '&') {
      bool entity = false;
      for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"})
        entity = entity || text.compare(at, std::char_traits<char>::length(e), e) == 0;
      if (!entity) return "a bare '&' at " + std::to_string(at);
      at++;
      continue;
    }
    if (c == '>') return "a '>' outside a tag at " + std::to_string(at);
    if (c != '<') {
      at++;
      continue;
    }
    if (text.compare(at, 2, "<?") == 0) {
      const size_t end = text.find("?>", at);
      if (end == std::string::npos) return "an unclosed <? at " + std::to_string(at);
      at = end + 2;
      continue;
    }
    // A tag: find its end outside quoted attribute values.
    size_t end = at + 1;
    char quote = 0;
    for (; end < text.size(); end++) {
      if (quote) {
        if (text[end] == quote) quote = 0;
        else if (text[end] == '<') return "a '<' in an attribute at " + std::to_string(end);
      } else if (text[end] == '"' || text[end] == '\'') {
        quote = text[end];
      } else if (text[end] == '>') {
        break;
      }
    }
    if (end >= text.size()) return "an unclosed tag at " + std::to_string(at);
    const std::string tag = text.substr(at + 1, end - at - 1);
    at = end + 1;
    if (tag.empty()) return "an empty tag";
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (open.empty() || open.back() != name) return "</" + name + "> closes " + (open.empty() ? "nothing" : open.back());
      open.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
    if (open.empty() && ++roots > 1) return "a second root element <" + name + ">";
    if (tag.back() != '/') open.push_back(name);
  }
  if (!open.empty()) return "<" + open.back() + "> is never closed";
  return roots == 1 ? "" : "no root element";
}

// xmllint's verdict on the file at path: true when it is well-formed or
// when xmllint is not installed (*ran says which).
inline bool xmllint_accepts(const std::string& path, bool* ran) {
  *ran = std::system("command -v xmllint > /dev/null 2>&1") == 0;
  if (!*ran) return true;
  return std::system(("xmllint --noout '" + path + "'").c_str()) == 0;
}

}  // namespace kvmem::test
