# Writes OUT (a header defining LQ_VERSION_STRING) from `git describe` of
# SRC, or FALLBACK when SRC is not a git checkout (a release tarball).
# Run at every build; the file is rewritten only when the version changed,
# so an unchanged version rebuilds nothing.
set(ver "${FALLBACK}")
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS "${SRC}/.git")
  # A release tag (v1.2.3) gives "1.2.3" or "1.2.3-4-gabc1234"; without one,
  # the project version plus the commit ("0.1.0-gabc1234"). "-dirty" marks
  # uncommitted changes.
  execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${SRC}" describe --tags --dirty --match "v[0-9]*"
                  OUTPUT_VARIABLE gitver OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE rc ERROR_QUIET)
  if(rc EQUAL 0 AND gitver)
    string(REGEX REPLACE "^v" "" ver "${gitver}")
  else()
    execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${SRC}" describe --always --dirty
                    OUTPUT_VARIABLE gitver OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE rc ERROR_QUIET)
    if(rc EQUAL 0 AND gitver)
      set(ver "${FALLBACK}-g${gitver}")
    endif()
  endif()
endif()
set(content "#define LQ_VERSION_STRING \"${ver}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
else()
  set(old "")
endif()
if(NOT old STREQUAL content)
  file(WRITE "${OUT}" "${content}")
endif()
