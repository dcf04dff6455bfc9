# The compile stage's time (CMakeLists.txt):
#   cmake -DACTION=start|stop -DTIMES=FILE -P build_clock.cmake
# start notes the time beside FILE; stop prints the seconds since then and records them in FILE
# as its "compile" line (replacing the one an earlier build left).
string(TIMESTAMP now "%s" UTC)
set(stamp "${TIMES}.start")
if(ACTION STREQUAL "start")
    file(WRITE "${stamp}" "${now}")
elseif(EXISTS "${stamp}")
    file(READ "${stamp}" started)
    math(EXPR seconds "${now} - ${started}")
    message(NOTICE "pyllama-mtp: compiled and linked in ${seconds} s")
    set(kept "")
    if(EXISTS "${TIMES}")
        file(STRINGS "${TIMES}" lines)
        list(FILTER lines EXCLUDE REGEX "^compile ")
        foreach(line IN LISTS lines)
            string(APPEND kept "${line}\n")
        endforeach()
    endif()
    file(WRITE "${TIMES}" "${kept}compile ${seconds} s\n")
endif()
